//! Black-box tests: run the real `duet` binary against temporary homes.
