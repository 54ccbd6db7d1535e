"""Following packets: options and filters, the BPF session, and decoding what it streams;
and the syscall view of one process (``syscalls``)."""
