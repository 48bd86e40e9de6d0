//! Real processes for the soak harness: the release `modbot serve` as a child process, and
//! private Redis and PostgreSQL instances (the same servers as the machine's shared ones, on
//! ports and directories of their own, so they can be killed and restarted freely).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port: bind port 0, read it, let it go.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The repository root (for `models/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The default encoder's directory, when it has been fetched.
pub fn default_model_dir() -> Option<PathBuf> {
    let dir = repo_root().join("models/all-MiniLM-L6-v2");
    dir.join("model.safetensors").is_file().then_some(dir)
}

/// How to run `modbot serve`.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// The encoder directory; `None`: rules only.
    pub model_dir: Option<PathBuf>,
    /// `--set KEY=VALUE` pairs.
    pub sets: Vec<(String, String)>,
    /// Extra environment (database URLs go here, never in flags).
    pub env: Vec<(String, String)>,
}

/// A `modbot serve` child process on a free port, its data in a temporary directory.
pub struct Modbot {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// Where its Prometheus metrics are served.
    pub metrics: SocketAddr,
    /// Its HTTP server (the console and the JSON API).
    pub http: SocketAddr,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Modbot {
    /// Starts the server (does not wait for it: see [`Modbot::wait_serving`]).
    pub fn start(options: &ServerOptions) -> Modbot {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let log = dir.path().join("modbot.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_modbot"));
        command
            .current_dir(dir.path())
            .arg("serve")
            .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(["--data-dir", &dir.path().join("data").display().to_string()]);
        let model_dir = options
            .model_dir
            .as_ref()
            .map_or(String::new(), |d| d.display().to_string());
        command.args(["--model-dir", &model_dir]);
        let mut sets = vec![
            (
                "model.heads_dir".to_owned(),
                repo_root().join("models/heads").display().to_string(),
            ),
            ("model.fetch_if_missing".to_owned(), "false".to_owned()),
            ("grpc.shutdown_grace_secs".to_owned(), "5".to_owned()),
        ];
        sets.extend(options.sets.iter().cloned());
        for (key, value) in &sets {
            command.args(["--set", &format!("{key}={value}")]);
        }
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let log_file = std::fs::File::create(&log).expect("create the server's log");
        command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file);
        let child = command.spawn().expect("start modbot serve");
        Modbot {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            metrics,
            http,
            log,
            dir,
        }
    }

    /// The server's data directory (its SQLite files).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Waits for health SERVING; on failure the error carries the end of the server's log.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "modbot exited with {status} before serving:\n{}",
                    self.log_tail(20)
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "modbot did not become SERVING within {timeout:?}:\n{}",
                    self.log_tail(20)
                ));
            }
            if super::load::wait_until_serving(&self.addr, left.min(Duration::from_millis(500)))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The sum of a Prometheus counter or gauge over its label sets (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        scrape_metric(self.metrics, name)
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `grace`). True when it exited by itself.
    pub fn stop(mut self, grace: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Modbot {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process's resident memory in KiB, in all and by kind (`/proc/PID/status`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// `VmRSS`: the sum of the three below.
    pub total: u64,
    /// `RssAnon`: the heap, stacks, anonymous mappings.
    pub anon: u64,
    /// `RssFile`: mapped files (the binary, the model's weights, SQLite's memory-mapped I/O).
    pub file: u64,
    /// `RssShmem`: shared memory (SQLite's WAL index, the `-shm` file).
    pub shmem: u64,
}

/// The resident memory of process `pid`, or `None` once it has gone.
pub fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
        shmem: field("RssShmem:").unwrap_or(0),
    })
}

/// The sum of a Prometheus metric over its label sets at `addr` (0 when absent).
pub fn scrape_metric(addr: SocketAddr, name: &str) -> f64 {
    scrape(addr)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}

/// GET /metrics over plain HTTP/1.0.
fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body.split_once("\r\n\r\n")?.1.to_owned())
}

/// Finds a program on PATH, or `None`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// A private `redis-server` (no persistence) on a port of its own, as a child process.
pub struct Redis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Whether `redis-server` is installed.
    pub fn available() -> bool {
        which("redis-server").is_some()
    }

    /// Starts one on a free port and waits for PONG.
    pub fn start() -> Result<Redis, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir,
        };
        redis.restart()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (SIGKILL: a crash, nothing saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it saves nothing) and waits for PONG.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server on port {} did not answer PING",
            self.port
        ))
    }

    /// True when it answers PING.
    pub fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private PostgreSQL cluster (initdb into a temporary directory, trust auth, loopback on a
/// port of its own), run as the `postgres` user when this runs as root.
pub struct Postgres {
    bin: PathBuf,
    root: PathBuf,
    /// Its port.
    pub port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// The directory with `initdb` and `pg_ctl`, when PostgreSQL is installed.
    pub fn bin_dir() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
            .collect();
        dirs.sort();
        dirs.pop().or_else(|| {
            let initdb = which("initdb")?.canonicalize().ok()?;
            let dir = initdb.parent()?.to_owned();
            dir.join("pg_ctl").is_file().then_some(dir)
        })
    }

    /// Whether `initdb` and `pg_ctl` are installed.
    pub fn available() -> bool {
        Self::bin_dir().is_some()
    }

    /// initdb + start; waits until it accepts connections.
    pub fn start() -> Result<Postgres, String> {
        let bin = Self::bin_dir().ok_or("initdb is not installed")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root = dir.path().to_owned();
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").args(["postgres", &root.display().to_string()]))?;
        }
        let postgres = Postgres {
            bin,
            root,
            port: free_port(),
            as_postgres,
            _dir: dir,
        };
        postgres.pg(
            "initdb",
            &[
                "-D",
                &postgres.data().display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        postgres.pg_ctl(&["start"])?;
        Ok(postgres)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast` (waits until it is up again).
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl(&["restart", "-m", "fast"])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.display()
        );
        let data = self.data().display().to_string();
        let log = self.root.join("postgres.log").display().to_string();
        let mut all = vec!["-D", &data, "-o", &options, "-l", &log, "-w"];
        all.extend_from_slice(args);
        self.pg("pg_ctl", &all)
    }

    fn pg(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir(&self.root);
        run(&mut command)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
