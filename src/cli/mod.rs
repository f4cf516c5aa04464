//! The operator's command line. Each subcommand is named after what an
//! operator does; store commands run in this process, or inside the daemon
//! when one holds the store (see `control`).

mod args;
mod import_cmd;
mod kmip_cmd;
mod kms_cmd;
mod logging;
mod lsu_cmd;
mod mount_cmd;
pub mod mount_opts;
mod out;
mod progress;
mod store_cmd;
mod worm_cmd;

use std::path::Path;

use clap::Parser;
use zeroize::Zeroizing;

pub use args::{Cli, Cmd, Global, parse_size};
use out::Out;

use crate::catalog::CatalogError;
use crate::control::{self, Response};
use crate::kms::{KmsError, Unlock};
use crate::store::{Store, StoreError};
use crate::tape::TapeError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Mount(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Tape(#[from] TapeError),
    #[error(transparent)]
    Msdp(#[from] crate::msdp::MsdpError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// fsck found damage (the report says where).
    #[error("{0}")]
    Damaged(String),
}

impl CliError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// 2 for a command that cannot be used this way (bad usage, or key
    /// changes on a store whose keys are in KMIP servers), 1 for a failure.
    fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) | Self::Kms(KmsError::ManagedByKmip(_)) => 2,
            _ => 1,
        }
    }
}

/// Reads a pass phrase file; one trailing newline is not part of the phrase.
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    /// A pass phrase is a line; a file longer than this is not one.
    const MAX: u64 = 64 * 1024;
    let f = std::fs::File::open(path).map_err(|e| CliError::io(path, e))?;
    let meta = f.metadata().map_err(|e| CliError::io(path, e))?;
    if !meta.is_file() || meta.len() > MAX {
        return Err(CliError::Usage(format!(
            "pass phrase file {} is not a regular file of at most {MAX} bytes",
            path.display()
        )));
    }
    let mut b = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX), &mut b)
        .map_err(|e| CliError::io(path, e))?;
    if b.ends_with(b"\n") {
        b.pop();
        if b.ends_with(b"\r") {
            b.pop();
        }
    }
    if b.is_empty() {
        return Err(CliError::Usage(format!(
            "pass phrase file {} is empty",
            path.display()
        )));
    }
    Ok(b)
}

/// The forms mount(8) and mount.fuse3 use become `kmsfs mount …`:
/// `mount.kmsfs SOURCE DIR [-o opts]` (`argv[0]` is the helper) and
/// `kmsfs SOURCE DIR [-o opts]` (what `-t fuse.kmsfs` runs).
pub fn mount_form(mut argv: Vec<String>) -> Vec<String> {
    const COMMANDS: &[&str] = &[
        "init",
        "mount",
        "kms",
        "volume",
        "image",
        "status",
        "fsck",
        "import",
        "lsu",
        "completions",
        "man",
        "help",
    ];
    let helper = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("mount.kmsfs"));
    // `kmsfs SOURCE DIR -o ...` (what mount.fuse3 runs) only when SOURCE
    // is a kmsfs store (the mount then names a bad DIR): a mistyped
    // subcommand gets clap's "unrecognized subcommand", not a mount attempt.
    let bare = argv.len() >= 3
        && !argv[1].starts_with('-')
        && !COMMANDS.contains(&argv[1].as_str())
        && is_store(Path::new(&argv[1]));
    if helper || bare {
        argv.insert(1, "mount".into());
    }
    argv
}

/// Whether `dir` is a kmsfs store (complete, or one whose init began).
fn is_store(dir: &Path) -> bool {
    dir.join(crate::store::CONFIG_FILE).is_file() || dir.join(crate::store::INIT_MARKER).is_file()
}

/// Entry point of the binary; returns the exit code.
pub fn run() -> i32 {
    crate::util::failpoint::arm();
    let argv = mount_form(std::env::args().collect());
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match dispatch(&cli, &argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kmsfs: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cli: &Cli, argv: &[String]) -> Result<i32, CliError> {
    match &cli.cmd {
        Cmd::Init(a) => {
            let mut out = Out::default();
            store_cmd::init(&cli.global, a, &mut out)?;
            print!("{}", out.stdout);
            Ok(0)
        }
        Cmd::Mount(a) => mount_cmd::mount(&cli.global, a, argv),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "kmsfs", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Man { out_dir } => man_pages(out_dir.as_deref()),
        _ => with_store(cli),
    }
}

/// `kmsfs man`: the page on stdout, or every page into a directory.
fn man_pages(out_dir: Option<&Path>) -> Result<i32, CliError> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match out_dir {
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(|e| CliError::io(Path::new("stdout"), e))?,
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| CliError::io(dir, e))?;
        }
    }
    Ok(0)
}

fn unlock(g: &Global) -> Result<Unlock, CliError> {
    Ok(Unlock {
        hmk_file: g.hmk_file.clone(),
        passphrase: g.passphrase_file.as_deref().map(read_secret).transpose()?,
    })
}

/// A store command as it travels to the daemon: typed, every path
/// absolute, with the presentation choices that shape its output.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Op {
    cmd: Cmd,
    bytes: bool,
}

impl Op {
    fn to_value(&self) -> Result<serde_json::Value, CliError> {
        serde_json::to_value(self)
            .map_err(|e| CliError::Usage(format!("command not sendable: {e}")))
    }
}

/// Runs a store command in the daemon if one serves the store, else here:
/// the same typed request either way.
fn with_store(cli: &Cli) -> Result<i32, CliError> {
    let dir = cli.global.store.clone().ok_or_else(|| {
        CliError::Usage("which store? give --store PATH or set KMSFS_STORE".into())
    })?;
    if let Cmd::Lsu(args::LsuCmd::Convert { name, step: false }) = &cli.cmd {
        return lsu_cmd::convert(&dir, name, || unlock(&cli.global));
    }
    let mut cmd = cli.cmd.clone();
    if args::has_file_args(&mut cmd) {
        let cwd = std::env::current_dir().map_err(|e| CliError::io(Path::new("."), e))?;
        args::absolutize(&mut cmd, &cwd);
    }
    let op = Op {
        cmd,
        bytes: cli.global.bytes,
    };
    let mut bars = progress::Bars::new(cli.global.quiet);
    if let Some(r) = control::forward(&dir, op.to_value()?, &mut |p| bars.show(p)) {
        bars.clear();
        print!("{}", r.stdout);
        eprint!("{}", r.stderr);
        return Ok(r.code);
    }
    let store = Store::open(&dir, unlock(&cli.global)?)?;
    let mut show = |p: &crate::util::progress::Progress| bars.show(p);
    let mut out = Out {
        exact_bytes: op.bytes,
        progress: Some(&mut show),
        ..Out::default()
    };
    let r = store_command(&store, &op.cmd, &mut out);
    let (stdout, stderr) = (
        std::mem::take(&mut out.stdout),
        std::mem::take(&mut out.stderr),
    );
    drop(out);
    bars.clear();
    print!("{stdout}");
    eprint!("{stderr}");
    r.map(|()| 0)
}

/// Records a key or retention command and its outcome in the audit log;
/// a command that changed something fails if its entry cannot be written.
fn audited(store: &Store, cmd: &Cmd, r: Result<(), CliError>) -> Result<(), CliError> {
    if let Cmd::Worm(
        args::WormCmd::Show(_)
        | args::WormCmd::Clock {
            confirm: false,
            skew: None,
        },
    ) = cmd
    {
        return r;
    }
    let (op, target) = args::describe(cmd);
    let outcome = match &r {
        Ok(()) => "done".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    let logged = store.audit.record(&op, &target, &outcome);
    r?;
    logged.map_err(|e| CliError::Usage(format!("the audit log: {e}")))
}

fn store_command(store: &Store, cmd: &Cmd, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        Cmd::Kms(k) if !k.reads_only() => audited(store, cmd, kms_cmd::run(store, k, out)),
        Cmd::Kms(k) => kms_cmd::run(store, k, out),
        Cmd::Volume(v) => store_cmd::volumes(store, v, out),
        Cmd::Image(i) => store_cmd::images(store, i, out),
        Cmd::Status(j) => store_cmd::status(store, j, out),
        Cmd::Fsck(j) => store_cmd::fsck(store, j, out),
        Cmd::Import(a) => import_cmd::run(store, a, out),
        Cmd::Lsu(l @ args::LsuCmd::Recover { .. }) => {
            audited(store, cmd, lsu_cmd::run(store, l, out))
        }
        Cmd::Lsu(l) => lsu_cmd::run(store, l, out),
        Cmd::Worm(w) => audited(store, cmd, worm_cmd::run(store, w, out)),
        Cmd::Audit(a) => worm_cmd::audit(store, a, out),
        Cmd::Init(_) | Cmd::Mount(_) | Cmd::Completions { .. } | Cmd::Man { .. } => Err(
            CliError::Usage("init, mount, completions and man do not run inside a daemon".into()),
        ),
    }
}

/// Runs a request from the control socket inside the daemon, against its
/// open store, reporting progress to the client as it goes. Its file
/// arguments must be absolute (the client made them so): the daemon's own
/// directory never changes and is never used.
pub fn run_in_daemon(
    store: &Store,
    op: &serde_json::Value,
    peer: control::Peer,
    progress: &mut dyn FnMut(&crate::util::progress::Progress),
) -> Response {
    let refused = |why: String| Response {
        code: 2,
        stdout: String::new(),
        stderr: format!("kmsfs: control socket: {why}\n"),
    };
    let mut op: Op = match serde_json::from_value(op.clone()) {
        Ok(o) => o,
        Err(e) => return refused(format!("not a command this daemon knows: {e}")),
    };
    if let Some(p) = args::relative_file_arg(&mut op.cmd) {
        return refused(format!("file argument {} is not absolute", p.display()));
    }
    // The daemon would read and write those files as its own user (root):
    // a store owner who is not that user runs such commands only unmounted,
    // with their own rights.
    let me = crate::util::process::euid();
    if peer.uid != me && args::has_file_args(&mut op.cmd) {
        return refused(format!(
            "refused: this command reads or writes files, which the daemon would do as uid {me} (root), not as your uid {}: run it as root",
            peer.uid
        ));
    }
    let mut out = Out {
        exact_bytes: op.bytes,
        progress: Some(progress),
        ..Out::default()
    };
    let code = match store_command(store, &op.cmd, &mut out) {
        Ok(()) => 0,
        Err(e) => {
            out.note(format!("kmsfs: {e}"));
            e.exit_code()
        }
    };
    Response {
        code,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::mount_form;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// clap's own consistency checks (they run only in debug builds, and
    /// the suite runs in release): aliases and globals do not collide.
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn mount_helper_forms() {
        assert_eq!(
            mount_form(v(&["/sbin/mount.kmsfs", "/s", "/m", "-o", "rw"])),
            v(&["/sbin/mount.kmsfs", "mount", "/s", "/m", "-o", "rw"])
        );
        let d = tempfile::tempdir().unwrap();
        let (st, mp) = (d.path().join("s"), d.path().join("m"));
        std::fs::create_dir(&st).unwrap();
        std::fs::create_dir(&mp).unwrap();
        std::fs::write(st.join("kmsfs.conf"), "{}").unwrap();
        let (st, mp) = (st.to_str().unwrap(), mp.to_str().unwrap());
        assert_eq!(
            mount_form(v(&["kmsfs", st, mp, "-o", "rw"])),
            v(&["kmsfs", "mount", st, mp, "-o", "rw"])
        );
        // Not a store: a subcommand clap will judge.
        assert_eq!(
            mount_form(v(&["kmsfs", mp, st, "-o", "rw"])),
            v(&["kmsfs", mp, st, "-o", "rw"])
        );
        // A store and a missing directory: a mount, which names the directory.
        assert_eq!(
            mount_form(v(&["kmsfs", st, "/nonexistent"])),
            v(&["kmsfs", "mount", st, "/nonexistent"])
        );
        assert_eq!(
            mount_form(v(&["kmsfs", "imgae", "list"])),
            v(&["kmsfs", "imgae", "list"])
        );
        assert_eq!(
            mount_form(v(&["kmsfs", "kms", "listkgs"])),
            v(&["kmsfs", "kms", "listkgs"])
        );
        assert_eq!(
            mount_form(v(&["kmsfs", "--store", "/s", "status"])),
            v(&["kmsfs", "--store", "/s", "status"])
        );
    }
}
