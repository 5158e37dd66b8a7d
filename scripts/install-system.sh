#!/usr/bin/env bash
# System packages obliviate uses when they are available: Debian's Fashion-MNIST files (the `fashion`
# preset) and Chromium (the report's browser test). Skipped quietly where apt is absent or we are not root.
set -u
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${need[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
        || echo "warning: could not install ${need[*]}; the fashion preset / browser test will say what is missing"
else
    echo "note: ${need[*]} not installed (needs apt as root); the fashion preset / browser test will say what is missing"
fi
exit 0
