#!/usr/bin/env bash
# References and load generators for the benchmarks, from Debian: nginx, HAProxy, etcd, dnsmasq, wrk,
# dnsperf and ab (apache2-utils: the one here that presents a client certificate, for bench.tls).
set -euo pipefail
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v ab >/dev/null || missing+=(apache2-utils)
command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || missing+=(etcd-server)
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
command -v dnsperf >/dev/null || missing+=(dnsperf)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
