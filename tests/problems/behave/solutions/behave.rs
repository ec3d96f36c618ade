// The verdict matrix's program in Rust (see tests/problems/README.md).
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

static SINK: AtomicU64 = AtomicU64::new(0);

fn burn() {
    loop {
        SINK.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    let words: Vec<&str> = input.split_whitespace().collect();
    let num = |i: usize| words.get(i).and_then(|w| w.parse::<i64>().ok()).unwrap_or(0);
    let (a, b) = (num(1), num(2));
    match words.first().copied().unwrap_or("") {
        "sum" => println!("{}", a + b),
        "wrong" => println!("{}", a + b + 1),
        "trailing" => print!("{}   \n\n\n", a + b),
        "spin" => burn(),
        "threads" => {
            let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(burn)).collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(100)),
        "alloc" => {
            let mut keep = Vec::new();
            loop {
                keep.push(vec![1u8; 16 << 20]);
            }
        }
        "flood" => {
            let mut out = std::io::stdout().lock();
            loop {
                if out.write_all(b"flood flood flood flood flood flood flood flood\n").is_err() {
                    break;
                }
            }
        }
        "crash" => std::process::abort(),
        "exit" => std::process::exit(4),
        _ => {}
    }
}
