#!/usr/bin/env bash
# What the tests need beyond Python: etcd-server from Debian (the etcd store's tests start real
# members on loopback ports). Run by `make test`; does nothing when etcd is there already.
set -euo pipefail
if ! command -v etcd >/dev/null && [ ! -x /usr/bin/etcd ]; then
  echo "installing etcd-server ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
