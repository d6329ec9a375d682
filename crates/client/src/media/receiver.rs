//! Media client: receiver (skeleton, filled in by the issue 13 work).
