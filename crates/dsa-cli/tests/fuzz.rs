//! Loader fuzzing: mutated and random inputs for the safetensors header parser
//! ([`Checkpoint::from_bytes`], then every tensor read), the sharded index reader
//! ([`Checkpoint::open`] on an index beside two shards), `config.json` parsing
//! ([`DeepSeekV32Config::from_json_str`], then the sizes computed from it) and
//! `tokenizer.json` loading ([`TextTokenizer::from_bytes`], then a round trip).
//!
//! Deterministic: a fixed seed, and a bounded count (`DSA_FUZZ_COUNT` inputs, 10,000 by
//! default; `cargo test --test fuzz -- --ignored` runs 100,000). Every input must end in
//! `Ok` or `Err`: a panic is caught and reported with the input (written to the temporary
//! directory for a rerun), and no single allocation may exceed 16 times the input's size
//! plus 4 MiB, so that a length a header claims beyond the input is refused before anything
//! is allocated for it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dsa_cli::tokenizer::TextTokenizer;
use dsa_model::cache::CacheMemory;
use dsa_model::loading::{Checkpoint, INDEX_FILE};
use dsa_model::DeepSeekV32Config;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Counts the largest allocation of the fuzzing thread while it runs an input.
struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let tracking = TRACKING.try_with(Cell::get).unwrap_or(false);
    if tracking {
        LARGEST.try_with(|largest| largest.set(largest.get().max(size))).ok();
    }
}

// SAFETY: forwards to the system allocator, only noting sizes in thread-locals that need
// no allocation.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// The largest allocation `f` made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, LARGEST.with(Cell::get))
}

/// The loaders under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Safetensors,
    Index,
    Config,
    Tokenizer,
}

const TARGETS: [Target; 4] = [Target::Safetensors, Target::Index, Target::Config, Target::Tokenizer];

/// A safetensors file of `tensors` (name, dtype, shape, bytes), written by hand.
fn safetensors(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(name.to_string(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}));
        data.extend_from_slice(bytes);
    }
    let mut text = serde_json::to_string(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    [&(text.len() as u64).to_le_bytes()[..], text.as_bytes(), &data].concat()
}

/// The valid inputs that mutations start from, per target.
struct Seeds {
    safetensors: Vec<Vec<u8>>,
    index: Vec<Vec<u8>>,
    config: Vec<Vec<u8>>,
    tokenizer: Vec<Vec<u8>>,
    /// A directory with two shards for the index.
    dir: tempfile::TempDir,
}

impl Seeds {
    fn new() -> Self {
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let file = safetensors(&[
            ("model.layers.0.w", "F8_E4M3", &[4, 6], (0..24).map(|i| 0x30 + i as u8).collect()),
            ("model.layers.0.w_scale_inv", "F32", &[1, 1], f32s(&[0.5])),
            ("b", "BF16", &[5], [0x80u8, 0x3F].repeat(5)),
            ("f", "F32", &[2, 3], f32s(&[1.0, -2.0, 3.5, 0.0, 1e-3, 7.0])),
            ("h", "F16", &[2], vec![0x00, 0x3C, 0x00, 0xC0]),
            ("d", "F64", &[1], 2.5f64.to_le_bytes().to_vec()),
            ("i", "I64", &[3], [1i64, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("flag", "BOOL", &[2], vec![1, 0]),
            ("empty", "F32", &[0, 4], vec![]),
        ]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model-1.safetensors"), safetensors(&[("a", "F32", &[2], f32s(&[1.0, 2.0]))])).unwrap();
        std::fs::write(dir.path().join("model-2.safetensors"), safetensors(&[("b", "BF16", &[2], vec![0x80, 0x3F, 0x00, 0x40])])).unwrap();
        let index = br#"{"metadata": {"total_size": 12}, "weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}"#.to_vec();
        let config = |cfg: &DeepSeekV32Config| serde_json::to_string_pretty(cfg).unwrap().into_bytes();
        let tokenizer_file = dir.path().join("tokenizer.json");
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/devils-dictionary.txt")).unwrap();
        TextTokenizer::train([text.chars().take(4000).collect::<String>()], 300).unwrap().save(&tokenizer_file).unwrap();
        let word_level = br#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":0,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":{"type":"Lowercase"},"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"<|endoftext|>":0,"a":1,"absurdity":2},"unk_token":"<|endoftext|>"}}"#.to_vec();
        Self {
            safetensors: vec![file],
            index: vec![index],
            config: vec![config(&DeepSeekV32Config::deepseek_v32()), config(&DeepSeekV32Config::tiny(1024))],
            tokenizer: vec![std::fs::read(&tokenizer_file).unwrap(), word_level],
            dir,
        }
    }

    fn of(&self, target: Target) -> &[Vec<u8>] {
        match target {
            Target::Safetensors => &self.safetensors,
            Target::Index => &self.index,
            Target::Config => &self.config,
            Target::Tokenizer => &self.tokenizer,
        }
    }
}

/// Numbers that break careless length and size arithmetic.
const INTERESTING: [u64; 12] = [0, 1, 7, 8, 255, 65_536, 1 << 31, 1 << 32, 100_000_001, (1 << 53) + 1, u64::MAX - 7, u64::MAX];
/// The same and other troublesome JSON values, as text.
const INTERESTING_JSON: [&str; 14] = [
    "0", "-1", "4294967296", "18446744073709551615", "18446744073709551616", "1e308", "-0", "1.5", "null", "true", "[]", "{}", "\"\"",
    "99999999999999999999999999",
];

/// `seed` changed by one random mutation, or two to four (one kind replaces it by random
/// bytes).
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    let rounds = if rng.random_bool(0.5) { 1 } else { rng.random_range(2..=4) };
    for _ in 0..rounds {
        let len = data.len();
        let at = |rng: &mut StdRng| rng.random_range(0..=len);
        match rng.random_range(0..11) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = rng.random();
            }
            2 => {
                let i = at(rng);
                let bytes: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                data.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let end = (i + rng.random_range(1..64)).min(len);
                data.drain(i..end);
            }
            4 => data.truncate(at(rng)),
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                let end = (i + rng.random_range(1..256)).min(len);
                let copy = data[i..end].to_vec();
                let j = at(rng);
                data.splice(j..j, copy);
            }
            6 => {
                // An interesting number in place of a number of the text, or as 8 bytes
                // (the safetensors header length at 0).
                let value = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit())).collect();
                if !digits.is_empty() && rng.random_bool(0.8) {
                    let start = digits[rng.random_range(0..digits.len())];
                    let end = (start..len).find(|&i| !data[i].is_ascii_digit()).unwrap_or(len);
                    let text = INTERESTING_JSON[rng.random_range(0..INTERESTING_JSON.len())];
                    data.splice(start..end, text.bytes());
                } else {
                    let i = if rng.random_bool(0.5) { 0 } else { rng.random_range(0..=len.saturating_sub(8)) };
                    let end = (i + 8).min(len);
                    data.splice(i..end, value.to_le_bytes());
                }
            }
            7 => {
                let text = INTERESTING_JSON[rng.random_range(0..INTERESTING_JSON.len())];
                let i = at(rng);
                data.splice(i..i, text.bytes());
            }
            8 => {
                data = (0..rng.random_range(0..512)).map(|_| rng.random()).collect();
            }
            9 => data.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
            _ => {
                // Nested brackets (deep JSON).
                let i = at(rng);
                let depth = rng.random_range(1..4096);
                let open = if rng.random_bool(0.5) { b'[' } else { b'{' };
                data.splice(i..i, std::iter::repeat_n(open, depth));
            }
        }
    }
    data
}

/// Runs `target` on `input`: whether it was accepted.
fn run(target: Target, input: &[u8], dir: &Path) -> bool {
    match target {
        Target::Safetensors => match Checkpoint::from_bytes("fuzz.safetensors", input.to_vec()) {
            Ok(ckpt) => {
                read_all(&ckpt);
                true
            }
            Err(_) => false,
        },
        Target::Index => {
            let index = dir.join(INDEX_FILE);
            std::fs::write(&index, input).unwrap();
            match Checkpoint::open(&index) {
                Ok(ckpt) => {
                    read_all(&ckpt);
                    true
                }
                Err(_) => false,
            }
        }
        Target::Config => {
            let Ok(text) = std::str::from_utf8(input) else { return false };
            match DeepSeekV32Config::from_json_str(text) {
                Ok(cfg) => {
                    let count = cfg.parameter_count();
                    let memory = CacheMemory::of(&cfg, 4);
                    assert!(count.active <= count.total && memory.layers == cfg.num_hidden_layers);
                    let _ = (cfg.kv_cache_bytes_per_token(2), cfg.softmax_scale(), cfg.weight_block_size(), cfg.attention());
                    true
                }
                Err(e) => {
                    let _ = e.to_string();
                    false
                }
            }
        }
        Target::Tokenizer => match TextTokenizer::from_bytes(input, "fuzz.json") {
            Ok(tokenizer) => {
                let ids = tokenizer.encode("ABSURDITY, n.  A statement");
                let _ = (tokenizer.decode(&ids), tokenizer.vocab_size(), tokenizer.eos());
                true
            }
            Err(_) => false,
        },
    }
}

/// Reads every tensor of `ckpt` as the loaders do (errors are fine).
fn read_all(ckpt: &Checkpoint) {
    let names: Vec<String> = ckpt.names().map(str::to_string).collect();
    for name in &names {
        let shape = ckpt.shape(name).map(<[usize]>::to_vec).unwrap_or_default();
        let _ = ckpt.check_tensor(name, &shape);
        let _ = ckpt.read_f32(name);
        let _ = ckpt.read_data(name);
    }
    let _ = ckpt.check_names(&names, 1, 1);
}

/// What a failing input did.
struct Failure {
    target: Target,
    input: usize,
    what: String,
    file: PathBuf,
}

/// Runs `count` inputs, the targets in turn, from `seed`; asserts no panic and no allocation
/// beyond the bound; prints a summary.
fn fuzz(count: usize, seed: u64) {
    let seeds = Seeds::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let (mut accepted, mut failures) = ([0usize; 4], Vec::new());
    let (mut slowest, mut largest) = ((Duration::ZERO, Target::Config), (0usize, 0usize, Target::Config));
    for i in 0..count {
        let t = i % TARGETS.len();
        let target = TARGETS[t];
        let pool = seeds.of(target);
        let parent = rng.random_range(0..pool.len());
        let input = mutate(&mut rng, &pool[parent]);
        let began = Instant::now();
        let (result, allocated) = largest_allocation(|| catch_unwind(AssertUnwindSafe(|| run(target, &input, seeds.dir.path()))));
        let took = began.elapsed();
        if took > slowest.0 {
            slowest = (took, target);
        }
        if allocated > largest.0 {
            largest = (allocated, input.len(), target);
        }
        let bound = 16 * input.len() + (4 << 20);
        let what = match result {
            Ok(ok) => {
                accepted[t] += usize::from(ok);
                (allocated > bound).then(|| format!("allocated {allocated} bytes at once for an input of {} bytes", input.len()))
            }
            Err(panic) => Some(format!("panicked: {}", panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())),
        };
        if let Some(what) = what {
            let file = std::env::temp_dir().join(format!("dsa-fuzz-{target:?}-{i}.bin"));
            std::fs::write(&file, &input).ok();
            failures.push(Failure { target, input: i, what, file });
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{count} inputs in {:.1} s ({:.0} µs each): accepted {} safetensors, {} index, {} config, {} tokenizer inputs; {} failures; largest allocation {} bytes ({:?}, input of {} bytes); slowest input {:.1} ms ({:?})",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count.max(1) as f64,
        accepted[0],
        accepted[1],
        accepted[2],
        accepted[3],
        failures.len(),
        largest.0,
        largest.2,
        largest.1,
        slowest.0.as_secs_f64() * 1e3,
        slowest.1
    );
    let report: Vec<String> = failures.iter().take(10).map(|f| format!("input {} ({:?}): {}; saved in {}", f.input, f.target, f.what, f.file.display())).collect();
    assert!(failures.is_empty(), "{} of {count} inputs failed:\n{}", failures.len(), report.join("\n"));
}

/// The number of inputs: `DSA_FUZZ_COUNT`, else `default`.
fn count(default: usize) -> usize {
    std::env::var("DSA_FUZZ_COUNT").ok().and_then(|c| c.parse().ok()).unwrap_or(default)
}

/// CI's run: 10,000 inputs, seconds in a debug build.
#[test]
fn loaders_survive_mutated_inputs() {
    fuzz(count(10_000), 27);
}

/// The long run: 100,000 inputs (`cargo test -p dsa-cli --test fuzz -- --ignored`).
#[test]
#[ignore]
fn loaders_survive_mutated_inputs_long() {
    fuzz(count(100_000), 2027);
}
