//! Layer 1: greenlet-style coroutines.
