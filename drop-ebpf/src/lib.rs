#![no_std]
// The programs live in main.rs (built for the bpf target by drop-user's
// build.rs); this empty library lets the workspace build on the host.
