//! Media I/O: relay (skeleton, filled in by the issue 13 work).
