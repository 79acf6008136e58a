//! Training text: files, directories and JSONL, packed into fixed-length token sequences.
//!
//! Plain files are one document each; `.jsonl` files hold one JSON object per line with a
//! `text` field. Directories are read recursively in name order. Bad input (an empty
//! file, a line that is not UTF-8, a JSONL line without `text`) is an error naming the
//! file and line.

use std::fmt;
use std::path::{Path, PathBuf};

/// One training document and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// `file` or `file:line`.
    pub source: String,
    /// The text.
    pub text: String,
}

/// Why training data could not be read or packed.
#[derive(Debug)]
pub enum DataError {
    /// The file or directory could not be read.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file with no text.
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A line that is not valid UTF-8.
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// A JSONL line that is not an object with a string `text` field.
    Jsonl {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Too little text for even one sequence.
    TooShort {
        /// Tokens in the data.
        tokens: usize,
        /// The requested sequence length.
        seq_len: usize,
    },
    /// The requested sequence length exceeds what the model supports.
    SeqLenTooLong {
        /// The requested sequence length.
        seq_len: usize,
        /// The model's maximum positions.
        max: usize,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::Empty { path } => write!(f, "{} has no text", path.display()),
            Self::InvalidUtf8 { path, line } => write!(f, "{}:{line}: not valid UTF-8", path.display()),
            Self::Jsonl { path, line, reason } => write!(f, "{}:{line}: {reason}", path.display()),
            Self::TooShort { tokens, seq_len } => write!(
                f,
                "the data has {tokens} tokens: too few for one sequence of {seq_len} (+1) tokens"
            ),
            Self::SeqLenTooLong { seq_len, max } => {
                write!(f, "--seq-len {seq_len} exceeds the model's maximum of {max} positions")
            }
        }
    }
}

impl std::error::Error for DataError {}

/// Reads every document under `paths` (files or directories).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("dsa-data-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("a.txt"), "Hello.").unwrap();
/// std::fs::write(dir.join("b.jsonl"), "{\"text\": \"one\"}\n{\"text\": \"two\"}\n").unwrap();
/// let docs = dsa_cli::data::read_documents(&[dir.clone()]).unwrap();
/// assert_eq!(docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(), ["Hello.", "one", "two"]);
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>, DataError> {
    let mut docs = Vec::new();
    for path in paths {
        read_path(path, &mut docs)?;
    }
    Ok(docs)
}

fn read_path(path: &Path, docs: &mut Vec<Document>) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort();
        for entry in entries.iter().filter(|p| !is_hidden(p)) {
            read_path(entry, docs)?;
        }
        return Ok(());
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let lines = utf8_lines(path, &bytes)?;
    if lines.iter().all(|l| l.trim().is_empty()) {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    if path.extension().is_some_and(|e| e == "jsonl") {
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let err = |reason: String| DataError::Jsonl { path: path.to_path_buf(), line: i + 1, reason };
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| err(format!("invalid JSON: {e}")))?;
            let text = value.get("text").and_then(|t| t.as_str()).ok_or_else(|| err("no string field \"text\"".into()))?;
            docs.push(Document { source: format!("{}:{}", path.display(), i + 1), text: text.to_string() });
        }
    } else {
        docs.push(Document { source: path.display().to_string(), text: lines.join("\n") });
    }
    Ok(())
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// The file's lines, or the number of the first line that is not UTF-8.
fn utf8_lines<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<&'a str>, DataError> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            std::str::from_utf8(line)
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .map_err(|_| DataError::InvalidUtf8 { path: path.to_path_buf(), line: i + 1 })
        })
        .collect()
}

/// Concatenates tokenised documents, each followed by `eos`, and cuts the stream into
/// sequences of `seq_len + 1` tokens (inputs and next-token targets), consecutive
/// sequences overlapping by one token. The incomplete tail is dropped.
///
/// ```
/// let seqs = dsa_cli::data::pack(vec![vec![1, 2, 3], vec![4, 5]], 0, 3).unwrap();
/// assert_eq!(seqs, [vec![1, 2, 3, 0], vec![0, 4, 5, 0]]);
/// ```
pub fn pack(docs: impl IntoIterator<Item = Vec<u32>>, eos: u32, seq_len: usize) -> Result<Vec<Vec<u32>>, DataError> {
    let mut stream = Vec::new();
    for doc in docs {
        stream.extend(doc);
        stream.push(eos);
    }
    if seq_len == 0 || stream.len() < seq_len + 1 {
        return Err(DataError::TooShort { tokens: stream.len(), seq_len });
    }
    Ok((0..(stream.len() - 1) / seq_len).map(|i| stream[i * seq_len..=(i + 1) * seq_len].to_vec()).collect())
}

/// Checks a sequence length against the model's maximum number of positions.
pub fn check_seq_len(seq_len: usize, max_positions: usize) -> Result<(), DataError> {
    if seq_len > max_positions {
        return Err(DataError::SeqLenTooLong { seq_len, max: max_positions });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_with_their_line() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "  \n").unwrap();
        assert_eq!(read_documents(&[empty]).unwrap_err().to_string(), format!("{}/empty.txt has no text", dir.display()));
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, b"fine\nalso fine\nnot \xff fine\n").unwrap();
        assert_eq!(read_documents(&[bad]).unwrap_err().to_string(), format!("{}/bad.txt:3: not valid UTF-8", dir.display()));
        let jsonl = dir.join("d.jsonl");
        std::fs::write(&jsonl, "{\"text\": \"ok\"}\n\n{\"title\": \"no text\"}\n").unwrap();
        assert!(read_documents(std::slice::from_ref(&jsonl)).unwrap_err().to_string().ends_with("d.jsonl:3: no string field \"text\""));
        std::fs::write(&jsonl, "{\"text\": \"ok\"}\n{oops\n").unwrap();
        assert!(read_documents(&[jsonl]).unwrap_err().to_string().contains("d.jsonl:2: invalid JSON"));
        let missing = dir.join("nope.txt");
        assert!(read_documents(&[missing]).unwrap_err().to_string().starts_with(&format!("cannot read {}/nope.txt", dir.display())));
    }

    #[test]
    fn packing_covers_the_stream_in_order() {
        let docs: Vec<Vec<u32>> = (0..7).map(|d| (0..d * 3 + 1).map(|i| 100 * d + i).collect()).collect();
        let stream: Vec<u32> = docs.iter().flat_map(|d| d.iter().copied().chain([9999])).collect();
        let seqs = pack(docs, 9999, 8).unwrap();
        assert_eq!(seqs.len(), (stream.len() - 1) / 8);
        for (i, s) in seqs.iter().enumerate() {
            assert_eq!(s.as_slice(), &stream[i * 8..i * 8 + 9]);
        }
        assert!(matches!(pack(vec![vec![1, 2]], 0, 3), Err(DataError::TooShort { tokens: 3, seq_len: 3 })));
        assert_eq!(check_seq_len(300, 256).unwrap_err().to_string(), "--seq-len 300 exceeds the model's maximum of 256 positions");
    }
}
