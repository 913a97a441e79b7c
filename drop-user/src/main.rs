fn main() { println!("{}", dropscope::EBPF_OBJECT.len()); }
