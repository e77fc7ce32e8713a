//! The rules-engine throughput benchmark without the gateway:
//! `cargo run --release -p campusgw-rules --example bench -- --rules 1000 --events 200000
//! [--pack campus|dense]` prints the same line as `campusgw bench rules`.

use campusgw_rules::bench::{Pack, run};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut rules, mut events, mut pack) = (1_000usize, 1_000_000u64, Pack::default());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rules" => rules = value.parse()?,
            "--events" => events = value.parse()?,
            "--pack" => pack = value.parse()?,
            other => {
                return Err(format!(
                    "unknown flag {other} (--rules N --events N --pack campus|dense)"
                )
                .into());
            }
        }
    }
    println!("{}", run(pack, rules, events)?);
    Ok(())
}
