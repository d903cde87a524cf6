#!/usr/bin/env bash
# What the tests run beside our server, from Debian: etcd-server (the etcd store's tests start real
# members on loopback ports) and etcdctl (they set up etcd's users with it), Prometheus (service
# discovery against us), dig and HAProxy (resolving through our DNS).
# Each entry is "command package"; only what is missing is installed.
set -euo pipefail
needed=(
  "etcd etcd-server"
  "etcdctl etcd-client"
  "prometheus prometheus"
  "dig bind9-dnsutils"
  "haproxy haproxy"
)
missing=()
for entry in "${needed[@]}"; do
  read -r command package <<<"$entry"
  command -v "$command" >/dev/null || [ -x "/usr/sbin/$command" ] || [ -x "/usr/bin/$command" ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
