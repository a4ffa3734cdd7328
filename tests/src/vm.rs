//! VM harness (filled in below).
