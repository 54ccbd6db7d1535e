"""The test VM: Debian's 6.1 kernel under qemu (TCG), sharing this host's root read-only.

kernel.py fetches and caches the kernel, boot.py builds the initramfs, boots and reads the
console, init.sh is the guest's PID 1. tests/test_vm.py uses it; `python -m tests.vm
PYTEST-ARGS` runs any part of the suite in the VM by hand.
"""
