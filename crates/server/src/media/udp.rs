//! Media I/O: udp (skeleton, filled in by the issue 13 work).
