//! Media I/O: standalone (skeleton, filled in by the issue 13 work).
