//! Would a JSON parser dependency, used only as a validator, check an event's `data` for fewer
//! instructions than the batch scanner's own validating skip (`src/bayeux/scan.rs`)?
//!
//! `validator_experiment bench VALIDATOR small|large N`: validates N `data` values shaped like
//! the instruction workload's events (benches/instructions/workload.rs: ~280 B and ~1.2 KB
//! events); run under `valgrind --tool=callgrind --toggle-collect='validator_experiment::run'`
//! so that only the validation loop is counted (see run.sh).
//!
//! `validator_experiment agree DIR...`: every file of the given corpora, and mutations of each,
//! through every validator and through serde_json (`from_slice::<IgnoredAny>`, the reference);
//! prints every disagreement by kind.

use serde::de::IgnoredAny;
use std::collections::BTreeMap;

const VALIDATORS: &[&str] = &[
    "ours",
    "serde",
    "sonic",
    "simd_json",
    "jiter",
    "json_checker",
];

/// A validator: whether its text is one valid JSON value.
type Validator = Box<dyn FnMut(&str) -> bool>;

/// A validator over text the caller already knows is UTF-8 (the body is checked before the
/// scan, so `data` is a `&str`); each keeps its buffers between calls, as a scanner would.
fn validator(name: &str) -> Validator {
    match name {
        "ours" => Box::new(ours),
        "serde" => Box::new(|s: &str| serde_json::from_str::<IgnoredAny>(s).is_ok()),
        // Full-validation skip (`skip_one(true)`) and the trailing check; no UTF-8 pass (`&str`).
        "sonic" => Box::new(|s: &str| sonic_rs::from_str::<IgnoredAny>(s).is_ok()),
        // simd-json parses in place: a copy into a reused buffer, stage 1 + stage 2 into a
        // reused tape (UTF-8 is always checked by its stage 1).
        "simd_json" => {
            let mut buffers = simd_json::Buffers::new(2048);
            let mut copy: Vec<u8> = Vec::with_capacity(2048);
            let mut tape = Some(simd_json::Tape::null().reset());
            Box::new(move |s: &str| {
                copy.clear();
                copy.extend_from_slice(s.as_bytes());
                let mut t = tape.take().expect("a tape").reset();
                let ok = simd_json::fill_tape(&mut copy, &mut buffers, &mut t).is_ok();
                tape = Some(t.reset());
                ok
            })
        }
        // `next_skip` then `finish` (no trailing data); jiter does not check UTF-8 when skipping.
        "jiter" => {
            let mut tape = Some(Vec::new());
            Box::new(move |s: &str| {
                let mut j = jiter::Jiter::with_tape(s.as_bytes(), tape.take().unwrap_or_default());
                let ok = j.next_skip().is_ok() && j.finish().is_ok();
                tape = Some(j.into_tape());
                ok
            })
        }
        // A port of json.org's JSON_checker: a pushdown automaton, one table step per byte.
        "json_checker" => Box::new(|s: &str| turbo_json_checker::validate_str(s).is_ok()),
        _ => panic!("unknown validator {name}; one of {VALIDATORS:?}"),
    }
}

/// The scanner's validating skip of a `data` value (`scan::value` at depth 2, whitespace around
/// it allowed), called through the crate's `fuzzing` module as `parse_batch` would run it.
fn ours(text: &str) -> bool {
    sfstream::fuzzing::validate_json_value(text.as_bytes())
}

/// The same validators on bytes that may not be UTF-8 (only for the agreement check: the crate
/// never hands invalid UTF-8 to the scan). `ours` is left out: the scan does not check UTF-8,
/// the body is checked before it.
fn validate_bytes(name: &str, b: &[u8]) -> Option<bool> {
    Some(match name {
        "serde" => serde_json::from_slice::<IgnoredAny>(b).is_ok(),
        "sonic" => sonic_rs::from_slice::<IgnoredAny>(b).is_ok(),
        "simd_json" => simd_json::to_tape(&mut b.to_vec()).is_ok(),
        "jiter" => {
            let mut j = jiter::Jiter::new(b);
            j.next_skip().is_ok() && j.finish().is_ok()
        }
        "json_checker" => turbo_json_checker::validate_bytes(b).is_ok(),
        _ => return None,
    })
}

/// The `data` value of the workload's event `i`.
fn data(i: usize, pad: usize) -> String {
    format!(
        r#"{{"schema":"interop","payload":{{"seq":{i},"CreatedDate":"2026-12-07T10:00:00.000Z","Text__c":"{}"}},"event":{{"replayId":{i}}}}}"#,
        "x".repeat(pad)
    )
}

#[inline(never)]
fn run(f: &mut dyn FnMut(&str) -> bool, values: &[String]) -> usize {
    values.iter().filter(|v| f(v)).count()
}

fn bench(args: &[String]) {
    let usage = "usage: validator_experiment bench VALIDATOR small|large N";
    let name = args.first().expect(usage);
    let pad = match args.get(1).map(String::as_str) {
        Some("small") => 110,
        Some("large") => 1030,
        _ => panic!("{usage}"),
    };
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).expect(usage);
    let values: Vec<String> = (0..n).map(|i| data(i % 1000, pad)).collect();
    let mut f = validator(name);
    let valid = run(&mut *f, &values);
    assert_eq!(valid, n, "{name} refused a valid value");
    println!("{name}: {n} values of {} bytes valid", values[0].len());
}

/// Inputs derived from one file: the file, its truncations, byte replacements and insertions.
fn mutations(file: &[u8], out: &mut Vec<Vec<u8>>) {
    out.push(file.to_vec());
    let len = file.len();
    let step = (len / 256).max(1);
    // Truncations.
    for cut in (0..len).step_by(step) {
        out.push(file[..cut].to_vec());
    }
    // One byte replaced.
    const BYTES: &[u8] = b"\x00\x1f\x7f\"\\0.e-}],:{[ \x0c\xff\xc3\x80tn1+E";
    for at in (0..len).step_by(step) {
        for &c in BYTES {
            let mut m = file.to_vec();
            m[at] = c;
            out.push(m);
        }
    }
    // Snippets inserted (or written over the bytes there).
    const SNIPPETS: &[&[u8]] = &[
        b"\\ud800",
        b"\\udc00",
        b"\\ud800\\u0041",
        b"\\uD83D\\uDE00",
        b"\\u12",
        b"\\uZZZZ",
        b"\\x",
        b"\\",
        b"\t",
        b"\x01",
        b"01",
        b"1.",
        b"-",
        b"1e",
        b"1e+",
        b".5",
        b"+1",
        b"-0",
        b"1E400",
        b"0x1",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\xf4\x90\x80\x80",
        b"\xe2\x82",
        b",",
        b"NaN",
        b"Infinity",
        b"tru",
        b"nul",
    ];
    for at in (0..len).step_by(step.max(4)) {
        for s in SNIPPETS {
            let mut m = file[..at].to_vec();
            m.extend_from_slice(s);
            m.extend_from_slice(&file[at..]);
            out.push(m);
            let mut m = file[..at].to_vec();
            m.extend_from_slice(s);
            m.extend_from_slice(&file[(at + s.len()).min(len)..]);
            out.push(m);
        }
    }
}

/// Hand-written cases: the grammar's corners.
fn cases() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "01",
        "1.",
        "-",
        "1e",
        "1e+",
        "-0",
        "-01",
        "1E+2",
        "1.5e-3",
        ".5",
        "+1",
        "1.e1",
        "0e",
        "00",
        "1e400",
        "-1e-400",
        "12345678901234567890123456789",
        "[1,]",
        "{\"a\":1,}",
        "[,1]",
        "{,}",
        "{\"a\"}",
        "{\"a\":}",
        "{1:1}",
        "[1 2]",
        "1 2",
        " 1 ",
        "\t[\n]\r ",
        "\x0c1",
        "1\x0c",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\ud800\"",
        "\"\\udc00\\ud800\"",
        "\"\\uD83D\\uDE00\"",
        "\"\\ud800x\"",
        "\"\\u00\"",
        "\"\\u00e9\"",
        "\"\\uZZZZ\"",
        "\"\\u12\"",
        "\"\\u123\"}",
        "\"\\x\"",
        "\"\\'\"",
        "\"\\a\"",
        "\"\\\"",
        "\"\t\"",
        "\"\x01\"",
        "\"\x1f\"",
        "\"\x7f\"",
        "\"\u{ffff}\"",
        "\u{feff}1",
        "NaN",
        "Infinity",
        "-Infinity",
        "nan",
        "tru",
        "true ",
        "nul",
        "null",
        "falsey",
        "",
        " ",
        "\"",
        "\"abc",
        "[",
        "{",
        "]",
        "[]]",
        "{}}",
        "[\"a\":1]",
        "{\"a\":1 \"b\":2}",
        "{\"a\" 1}",
        "[true,false,null]",
        "\"\\/\"",
        "\"\\b\\f\\n\\r\\t\"",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for bad in [
        &b"\"\xff\""[..],
        b"\"\xc0\xaf\"",
        b"\"\xed\xa0\x80\"",
        b"\"\xe2\x82\"",
        b"\"\xf4\x90\x80\x80\"",
    ] {
        v.push(bad.to_vec());
    }
    for depth in [63, 64, 65, 127, 128, 129, 200, 201, 255, 256, 1024, 10_000] {
        v.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes());
        v.push(format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes());
        v.push("[".repeat(depth).into_bytes());
    }
    v
}

/// Why `name` refuses `input`: its error message with positions and numbers blanked, so that
/// disagreements group by cause.
fn explain(name: &str, input: &[u8]) -> String {
    let message = match name {
        "ours" => {
            let nesting = input.iter().filter(|c| matches!(c, b'[' | b'{')).count();
            String::from(if nesting >= 62 {
                "refused: deep nesting (the scanner leaves such a body to serde)"
            } else {
                "refused"
            })
        }
        "serde" => serde_json::from_slice::<IgnoredAny>(input)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        "sonic" => sonic_rs::from_slice::<IgnoredAny>(input)
            .err()
            .map(|e| e.to_string().lines().next().unwrap_or_default().to_string())
            .unwrap_or_default(),
        "simd_json" => simd_json::to_tape(&mut input.to_vec())
            .err()
            .map(|e| format!("{:?}", e.error()))
            .unwrap_or_default(),
        "jiter" => {
            let mut j = jiter::Jiter::new(input);
            match j.next_skip().and_then(|()| j.finish()) {
                Ok(()) => String::new(),
                Err(e) => e.error_type.to_string(),
            }
        }
        "json_checker" => turbo_json_checker::validate_bytes(input)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    };
    let mut out = String::new();
    let mut digits = false;
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .to_string();
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('N');
            }
            digits = true;
        } else {
            digits = false;
            out.push(c);
        }
    }
    out
}

fn agree(dirs: &[String]) {
    let mut inputs = cases();
    let mut files = 0;
    for dir in dirs {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .expect("a corpus directory")
            .map(|e| e.expect("an entry").path())
            .collect();
        paths.sort();
        for path in paths {
            mutations(&std::fs::read(&path).expect("a file"), &mut inputs);
            files += 1;
        }
    }
    println!("{files} files, {} inputs", inputs.len());
    std::panic::set_hook(Box::new(|_| {}));
    let mut fs: Vec<(&str, Validator)> = VALIDATORS
        .iter()
        .map(|n| match *n {
            "ours" => (*n, Box::new(ours) as Validator),
            _ => (*n, validator(n)),
        })
        .collect();
    // (validator, kind) -> (count, up to 3 examples)
    let mut found: BTreeMap<(String, &str, String), (usize, Vec<String>)> = BTreeMap::new();
    let mut accepted = 0;
    for input in &inputs {
        let reference = serde_json::from_slice::<IgnoredAny>(input).is_ok();
        accepted += usize::from(reference);
        let text = std::str::from_utf8(input).ok();
        for (name, f) in fs.iter_mut() {
            // A validator that panics is recorded as such (verdict `None`).
            let call = std::panic::AssertUnwindSafe(|| match text {
                Some(s) => Some((f(s), String::from(*name))),
                None => {
                    validate_bytes(name, input).map(|v| (v, format!("{name} (bytes, not UTF-8)")))
                }
            });
            let (verdict, label) = match std::panic::catch_unwind(call) {
                Ok(Some((v, label))) => (Some(v), label),
                Ok(None) => continue,
                Err(_) => (None, String::from(*name)),
            };
            if verdict != Some(reference) {
                let kind = if verdict.is_none() {
                    "PANICS"
                } else if verdict == Some(true) {
                    "ACCEPTS what serde refuses"
                } else {
                    "refuses what serde accepts"
                };
                let reason = match verdict {
                    Some(true) => format!("serde: {}", explain("serde", input)),
                    Some(false) => explain(name, input),
                    None => String::from("panic"),
                };
                let key = (label, kind, reason);
                let stem: String = format!("{}-{}-{}", key.0, key.1, key.2)
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let entry = found.entry(key).or_default();
                entry.0 += 1;
                if entry.1.len() < 4 {
                    // DUMP=DIR keeps the examples whole, to look at with `one`.
                    if let Ok(dir) = std::env::var("DUMP") {
                        let file = format!("{dir}/{stem}-{}.json", entry.1.len());
                        std::fs::write(file, input).expect("a dump file");
                    }
                    let shown = String::from_utf8_lossy(input);
                    let shown: String = if shown.len() > 90 {
                        format!(
                            "{}… ({} bytes)",
                            shown.chars().take(60).collect::<String>(),
                            input.len()
                        )
                    } else {
                        shown.into_owned()
                    };
                    entry.1.push(format!("{shown:?}"));
                }
            }
        }
    }
    println!("serde accepts {accepted} of {}", inputs.len());
    if found.is_empty() {
        println!("no disagreement");
    }
    for ((name, kind, category), (count, examples)) in &found {
        println!("{name}: {kind}: {category}: {count}");
        for e in examples {
            println!("    {e}");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => bench(&args[1..]),
        Some("agree") => agree(&args[1..]),
        Some("one") => {
            // Each validator's verdict on one input (stdin), against serde's.
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input).expect("stdin");
            let reference = serde_json::from_slice::<IgnoredAny>(&input);
            println!("serde: {reference:?}");
            for name in VALIDATORS {
                let verdict = match std::str::from_utf8(&input) {
                    Ok(s) if *name == "ours" => ours(s),
                    Ok(s) => validator(name)(s),
                    Err(_) => match validate_bytes(name, &input) {
                        Some(v) => v,
                        None => continue,
                    },
                };
                println!("{name}: {verdict}");
            }
        }
        _ => eprintln!("usage: validator_experiment bench VALIDATOR small|large N | agree DIR..."),
    }
}
