//! The local image store: import, pull, unpack, garbage-collect.
