#!/usr/bin/env bash
# Installs the Debian packages that tests and benchmarks drive for real.
# As root it installs what is missing; otherwise it says which tests will skip.
set -u
PACKAGES="${PILOT_SYSTEM_PACKAGES:-}"
[ -f scripts/system-packages.txt ] && PACKAGES="$PACKAGES $(grep -v '^#' scripts/system-packages.txt | tr '\n' ' ')"
missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "system-deps: not root, cannot install:$missing (tests that need them will skip)" >&2
    exit 0
fi
echo "system-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
# policy-rc.d keeps Debian from starting system services (redis on 6379) that tests must not rely on.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get install -y -qq --no-install-recommends $missing >/dev/null || echo "system-deps: apt-get failed for:$missing" >&2
rm -f /usr/sbin/policy-rc.d
exit 0
