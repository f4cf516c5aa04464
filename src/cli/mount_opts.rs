//! The `-o` option list of `kmsfs mount`, mount(8) and fstab: parsed here
//! and nowhere else. Unknown or malformed options are an error that names
//! them, before anything is mounted.

use std::path::PathBuf;

/// Parsed mount options.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MountOpts {
    pub read_only: bool,
    pub allow_other: bool,
    pub no_default_permissions: bool,
    pub passfile: Option<PathBuf>,
    pub hmk: Option<PathBuf>,
    pub drives: Option<u32>,
    pub kms_timeout: Option<u64>,
    pub log: Option<String>,
    pub log_file: Option<PathBuf>,
    pub foreground: bool,
    /// Mount over a directory that holds files (they are hidden meanwhile).
    pub nonempty: bool,
    pub threads: Option<usize>,
    /// KMIP servers for this mount (repeat the option; first is tried first).
    pub kmip_servers: Vec<String>,
    pub kmip_ca: Option<PathBuf>,
    pub kmip_cert: Option<PathBuf>,
    pub kmip_key: Option<PathBuf>,
    /// Seconds a tape key fetched from KMIP stays cached.
    pub key_cache: Option<u64>,
}

/// Options mount(8), fstab and systemd pass along; accepted, no effect here.
const GENERIC: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "sync",
    "async",
    "loop",
    "silent",
    "loud",
];

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("mount option '{key}={v}': '{v}' is not a number"))
}

/// Parses every `-o` argument (each a comma-separated list).
pub fn parse<'a>(lists: &'a [String]) -> Result<MountOpts, String> {
    let mut o = MountOpts::default();
    for opt in lists
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let need = |v: Option<&'a str>| -> Result<&'a str, String> {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| format!("mount option '{key}' needs a value ({key}=...)"))
        };
        match key {
            "ro" => o.read_only = true,
            "rw" => o.read_only = false,
            "allow_other" => o.allow_other = true,
            "default_permissions" => o.no_default_permissions = false,
            "nodefault_permissions" => o.no_default_permissions = true,
            "fg" | "foreground" => o.foreground = true,
            "nonempty" => o.nonempty = true,
            // One spelling in help; `passfile` kept for existing fstabs.
            "pass_phrase_file" | "passfile" => o.passfile = Some(need(val)?.into()),
            "hmk" => o.hmk = Some(need(val)?.into()),
            "log_file" => o.log_file = Some(need(val)?.into()),
            "drives" => {
                let n: u32 = number(key, need(val)?)?;
                if n == 0 {
                    return Err("mount option 'drives=0': must be at least 1".into());
                }
                o.drives = Some(n);
            }
            "kms_timeout" => o.kms_timeout = Some(number(key, need(val)?)?),
            "threads" => o.threads = Some(number(key, need(val)?)?),
            "kmip_server" => o.kmip_servers.push(need(val)?.into()),
            "kmip_ca" => o.kmip_ca = Some(need(val)?.into()),
            "kmip_cert" => o.kmip_cert = Some(need(val)?.into()),
            "kmip_key" => o.kmip_key = Some(need(val)?.into()),
            "key_cache" => o.key_cache = Some(number(key, need(val)?)?),
            "log" => {
                let v = need(val)?;
                if !LOG_LEVELS.contains(&v) {
                    return Err(format!(
                        "mount option 'log={v}': level must be one of {}",
                        LOG_LEVELS.join(", ")
                    ));
                }
                o.log = Some(v.into());
            }
            k if GENERIC.contains(&k) && val.is_none() => {}
            k if k.starts_with("x-systemd.") || k.starts_with("x-") || k == "comment" => {}
            _ => {
                return Err(format!(
                    "unknown mount option '{opt}' (see kmsfs mount --help)"
                ));
            }
        }
    }
    if o.allow_other && o.no_default_permissions {
        return Err("mount options 'allow_other' and 'nodefault_permissions' together would let every local user read decrypted images and replace or remove them: refused (allow_other keeps the kernel's permission checks, default_permissions)".into());
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MountOpts, String> {
        parse(&[s.to_string()])
    }

    #[test]
    fn known_options() {
        let o = p("ro,allow_other,passfile=/etc/pp,drives=3,kms_timeout=5,log=debug,noauto,x-systemd.automount,comment=x,_netdev").unwrap();
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.passfile, Some("/etc/pp".into()));
        assert_eq!(
            (o.drives, o.kms_timeout, o.log.as_deref()),
            (Some(3), Some(5), Some("debug"))
        );
    }

    #[test]
    fn kmip_options() {
        let o = p("kmip_server=a:5696,kmip_server=b:5696,kmip_ca=/c,kmip_cert=/d,kmip_key=/e,key_cache=60").unwrap();
        assert_eq!(o.kmip_servers, ["a:5696", "b:5696"]);
        assert_eq!(o.kmip_ca, Some("/c".into()));
        assert_eq!(o.key_cache, Some(60));
        assert!(p("kmip_server").unwrap_err().contains("needs a value"));
    }

    #[test]
    fn bad_options_are_named() {
        assert!(p("bogus").unwrap_err().contains("'bogus'"));
        assert!(p("drives=abc").unwrap_err().contains("drives=abc"));
        assert!(p("drives=0").unwrap_err().contains("at least 1"));
        assert!(p("passfile").unwrap_err().contains("needs a value"));
        assert_eq!(
            p("pass_phrase_file=/etc/pp").unwrap().passfile,
            Some("/etc/pp".into())
        );
        assert!(p("log=loud").unwrap_err().contains("log=loud"));
        let e = p("allow_other,nodefault_permissions").unwrap_err();
        assert!(
            e.contains("allow_other") && e.contains("nodefault_permissions"),
            "{e}"
        );
        assert!(
            p("nodefault_permissions").is_ok(),
            "root-only mount: root's own choice"
        );
    }
}
