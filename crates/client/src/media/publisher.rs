//! Media client: publisher (skeleton, filled in by the issue 13 work).
