//! A private Dovecot 2.3 per test: `dovecot -F -c CONF` as a child process
//! with its own config, passwd-file users, Maildir storage, log file and run
//! dir in a fresh temp dir, on a free 127.0.0.1 port. Mail goes in straight
//! into the Maildir ([`Dovecot::deliver`]) or over IMAP
//! ([`Dovecot::append`]), also with a given INTERNALDATE
//! ([`Dovecot::deliver_received`]); what the daemon did is read back over
//! IMAP ([`Dovecot::flags`], [`Dovecot::count`], [`Dovecot::fetch`],
//! [`Dovecot::folders`]); [`Dovecot::stop`] and [`Dovecot::restart`] make
//! outages, [`Dovecot::reset_uid_validity`] a migrated mailbox; [`Dovecot::start_tls`] adds STARTTLS on the same port and an
//! implicit-TLS listener on [`Dovecot::imaps_port`].

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::TestCa;
use crate::client::ImapMessage;
use crate::client::{ImapClient, quote};
use crate::server::{
    LOG_TAIL_LINES, Launch, START_TIMEOUT, ServerProcess, free_port, launch_on_free_ports,
    read_lossy, relaunch, server_dir, set_mode, tail, unique, wait_ready, write_atomically,
    write_file,
};

/// (uid, gid) of the running process: the owner of a dir it just created.
fn own_ids(dir: &Path) -> (u32, u32) {
    let meta = fs::metadata(dir).unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()));
    (meta.uid(), meta.gid())
}

/// (name, uid, gid) of the /etc/passwd entry matching `pred`.
fn passwd_entry(pred: impl Fn(&str, u32) -> bool) -> Option<(String, u32, u32)> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
        pred(name, uid).then(|| (name.to_string(), uid, gid))
    })
}

/// Name of the /etc/group entry with this gid.
fn group_name(gid: u32) -> Option<String> {
    let text = fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == gid).then(|| f[0].to_string())
    })
}

// ---------------------------------------------------------------------------
// Dovecot
// ---------------------------------------------------------------------------

/// Who the Dovecot processes run as: depends on whether the tests run as root.
#[derive(Clone, Debug)]
struct Identity {
    /// The test process runs as root: Dovecot uses its packaged `dovecot` and
    /// `dovenull` users and the mail processes run as `nobody`.
    root: bool,
    /// Owner of the mail files (the userdb uid/gid).
    mail_uid: u32,
    mail_gid: u32,
    /// Not root: this user is Dovecot's internal and login user too,
    user_name: String,
    /// and this group its internal group.
    group_name: String,
}

impl Identity {
    fn detect(dir: &Path) -> Identity {
        let (uid, gid) = own_ids(dir);
        if uid == 0 {
            for user in ["dovecot", "dovenull"] {
                if passwd_entry(|name, _| name == user).is_none() {
                    panic!(
                        "the system user {user:?} is missing: it comes with Debian's \
                         dovecot-core package (scripts/test installs dovecot-imapd)"
                    );
                }
            }
            // The unprivileged Dovecot processes must reach the temp dir.
            for ancestor in dir.ancestors().skip(1) {
                let mode = fs::metadata(ancestor).map_or(0, |m| m.mode() & 0o7777);
                assert!(
                    mode & 0o001 != 0,
                    "{} (mode {mode:o}) cannot be traversed by Dovecot's unprivileged users: \
                     point TMPDIR at a directory under a world-traversable path such as /tmp",
                    ancestor.display()
                );
            }
            // Dovecot refuses uid 0 for mail access: mail files belong to nobody.
            let (_, mail_uid, mail_gid) = passwd_entry(|name, _| name == "nobody")
                .unwrap_or_else(|| ("nobody".into(), 65534, 65534));
            Identity {
                root: true,
                mail_uid,
                mail_gid,
                user_name: "root".into(),
                group_name: "root".into(),
            }
        } else {
            let user_name = passwd_entry(|_, u| u == uid)
                .map(|(name, _, _)| name)
                .unwrap_or_else(|| {
                    panic!(
                        "uid {uid} has no /etc/passwd entry: Dovecot needs a user name \
                         for default_internal_user"
                    )
                });
            let group_name = group_name(gid).unwrap_or_else(|| {
                panic!(
                    "gid {gid} has no /etc/group entry: Dovecot needs a group name \
                     for default_internal_group"
                )
            });
            Identity {
                root: false,
                mail_uid: uid,
                mail_gid: gid,
                user_name,
                group_name,
            }
        }
    }

    /// Give a file or dir the harness created to the mail user (as root).
    fn own(&self, path: &Path) {
        if self.root {
            std::os::unix::fs::chown(path, Some(self.mail_uid), Some(self.mail_gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

fn dovecot_binary() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("MAILTRIAGE_TEST_DOVECOT") {
            return bin;
        }
        if Path::new("/usr/sbin/dovecot").exists() {
            return "/usr/sbin/dovecot".into();
        }
        panic!(
            "/usr/sbin/dovecot not found: install Debian's dovecot-imapd \
             (scripts/test does), or set MAILTRIAGE_TEST_DOVECOT"
        )
    })
}

/// A private Dovecot IMAP server (plain IMAP on 127.0.0.1, TLS too with
/// [`Dovecot::start_tls`]; passwd-file users with plain passwords, Maildir
/// under its temp dir). See the module docs.
pub struct Dovecot {
    /// Declared first, so dropped first: the server goes before its dir.
    process: ServerProcess,
    dir: TempDir,
    port: u16,
    /// The implicit-TLS (imaps) port; 0 unless started by `start_tls`.
    imaps_port: u16,
    /// Started by `start_tls`: `ssl = yes` with the files in `tls/`.
    tls: bool,
    identity: Identity,
    users: Vec<(String, String)>,
    instance: String,
    /// Started by `start_oauth`: XOAUTH2 and OAUTHBEARER too, the tokens
    /// checked at this introspection URL.
    introspection_url: Option<String>,
}

impl Dovecot {
    /// Start a server with these (user, password) accounts. Panics with the log
    /// tail if it does not answer `* OK` in time.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_inner(users, None, None)
    }

    /// [`Dovecot::start`] that also takes `AUTHENTICATE XOAUTH2` (and
    /// OAUTHBEARER): Dovecot's `oauth2` passdb checks each token at
    /// `introspection_url` (RFC 7662, `introspection_mode = post`), active
    /// and with `username` the user logging in. Passwords still work, for
    /// the kit's own clients.
    pub fn start_oauth(users: &[(&str, &str)], introspection_url: &str) -> Dovecot {
        Dovecot::start_inner(users, None, Some(introspection_url.to_string()))
    }

    /// [`Dovecot::start`] with TLS (`ssl = yes`, the server certificate and
    /// key of `ca`, TLS 1.2 or later): the normal listener ([`Dovecot::port`])
    /// offers STARTTLS, still allowing plaintext LOGIN (loopback), and a
    /// second listener ([`Dovecot::imaps_port`]) speaks TLS from the first
    /// byte. The certificate files are copied into the server's dir, so the
    /// server does not depend on `ca` living on.
    pub fn start_tls(users: &[(&str, &str)], ca: &TestCa) -> Dovecot {
        Dovecot::start_inner(users, Some(ca), None)
    }

    fn start_inner(
        users: &[(&str, &str)],
        ca: Option<&TestCa>,
        introspection_url: Option<String>,
    ) -> Dovecot {
        let dir = server_dir("mailtriage-dovecot-");
        let identity = Identity::detect(dir.path());
        let mut server = Dovecot {
            port: 0,
            imaps_port: 0,
            tls: ca.is_some(),
            process: ServerProcess::default(),
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            instance: format!("mt{}-{}", std::process::id(), unique()),
            introspection_url,
            identity,
            dir,
        };
        for sub in ["run", "state", "mail"] {
            let path = server.dir.path().join(sub);
            fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        }
        set_mode(&server.dir.path().join("run"), 0o755);
        let mail = server.dir.path().join("mail");
        set_mode(&mail, 0o755);
        server.identity.own(&mail);
        server.write_passwd();
        if let Some(url) = &server.introspection_url {
            // Read by the auth process (root, or this user).
            let path = server.dir.path().join("oauth2.conf.ext");
            write_file(
                &path,
                format!(
                    "introspection_mode = post\nintrospection_url = {url}\n\
                     username_attribute = username\nactive_attribute = active\n\
                     active_value = true\nforce_introspection = yes\ntimeout_msecs = 5000\n"
                )
                .as_bytes(),
            );
            set_mode(&path, 0o644);
        }
        if let Some(ca) = ca {
            // Read by Dovecot's config process (root, or this user).
            let tls = ca.install(&server.dir.path().join("tls"));
            set_mode(&tls, 0o755);
        }

        let started = launch_on_free_ports(&mut server, |server| {
            server.port = free_port();
            if server.tls {
                server.imaps_port = loop {
                    let p = free_port();
                    if p != server.port {
                        break p;
                    }
                };
            }
            format!("ports {} and {}", server.port, server.imaps_port)
        });
        if let Err(why) = started {
            panic!("Dovecot did not start:\n{why}\n{}", server.log_tail());
        }
        server
    }

    /// The IMAP port on 127.0.0.1 (plain IMAP, LOGIN/AUTHENTICATE PLAIN
    /// allowed; STARTTLS offered too when started by [`Dovecot::start_tls`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The implicit-TLS IMAP port (imaps) on 127.0.0.1; panics unless the
    /// server was started by [`Dovecot::start_tls`].
    pub fn imaps_port(&self) -> u16 {
        assert!(
            self.tls,
            "imaps_port: this Dovecot has no TLS (use Dovecot::start_tls)"
        );
        self.imaps_port
    }

    /// The CA certificate (PEM) that signed this server's certificate (a
    /// copy in its dir); panics unless started by [`Dovecot::start_tls`].
    pub fn ca_file(&self) -> PathBuf {
        assert!(
            self.tls,
            "ca_file: this Dovecot has no TLS (use Dovecot::start_tls)"
        );
        self.dir.path().join("tls").join("ca.pem")
    }

    /// The server's temp dir (config, log, run dir, `mail/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The user's Maildir root (its INBOX); folders are `.Name` beneath it.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// The whole server log (Dovecot's log file, then anything on its stderr).
    pub fn log(&self) -> String {
        let mut log = read_lossy(&self.dir.path().join("dovecot.log"));
        let stderr = read_lossy(&self.dir.path().join("dovecot.stderr"));
        if !stderr.trim().is_empty() {
            log.push_str("--- dovecot stderr ---\n");
            log.push_str(&stderr);
        }
        log
    }

    /// The end of the log, labelled, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- Dovecot log tail ({}) ---\n{}",
            self.dir.path().join("dovecot.log").display(),
            tail(&self.log(), LOG_TAIL_LINES)
        )
    }

    /// Is the server process running (started and not stopped)?
    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    /// Kill the server and all its processes (open connections drop at once,
    /// like a crash or an outage), wait for them to go, remove `run/master.pid`.
    /// The data stays. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Err(e) = self.process.stop() {
            panic!("stopping Dovecot: {e}\n{}", self.log_tail());
        }
        let _ = fs::remove_file(self.dir.path().join("run").join("master.pid"));
    }

    /// Stop (if running) and start again on the same port and data. Retries
    /// the bind while the port is still held, up to a deadline.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = relaunch(self) {
            panic!(
                "Dovecot did not restart on port {}: {e}\n{}",
                self.port,
                self.log_tail()
            );
        }
    }

    /// Replace a user's password, or add the user, and wait until the server
    /// accepts it. Dovecot re-reads a changed passwd-file, but checks it at
    /// most once a second, so the change can take up to a second to show.
    pub fn set_password(&mut self, user: &str, password: &str) {
        match self.users.iter_mut().find(|(u, _)| u == user) {
            Some(entry) => entry.1 = password.to_string(),
            None => self.users.push((user.to_string(), password.to_string())),
        }
        self.write_passwd();
        if !self.running() {
            return;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let result = self.connect().and_then(|mut c| {
                let r = c.login(user, password);
                let _ = c.logout();
                r
            });
            match result {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!(
                    "the new password of {user} was not accepted within {START_TIMEOUT:?}: {e}"
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no user {user:?} in this Dovecot (users are set by start)"))
    }

    fn write_passwd(&self) {
        let mut text = String::new();
        for (user, password) in &self.users {
            assert!(
                !user.contains([':', '\n']) && !password.contains('\n'),
                "user {user:?} or its password cannot go into a passwd-file"
            );
            let _ = writeln!(text, "{user}:{{PLAIN}}{password}");
        }
        let path = self.dir.path().join("passwd");
        write_atomically(&path, text.as_bytes());
        set_mode(&path, 0o644);
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        let id = &self.identity;
        // With TLS: STARTTLS on the imap listener (plaintext still allowed),
        // and an implicit-TLS listener on a second port. The certificate
        // chain and key are read (`<file`) by the config process. Handshake
        // failures are logged (verbose_ssl), e.g. a client refusing the CA.
        let (ssl, imaps) = if self.tls {
            (
                format!(
                    "ssl = yes\nssl_cert = <{d}/tls/server-chain.pem\n\
                     ssl_key = <{d}/tls/server.key\nssl_min_protocol = TLSv1.2\n\
                     verbose_ssl = yes"
                ),
                format!(
                    "  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {}\n    \
                     ssl = yes\n  }}\n",
                    self.imaps_port
                ),
            )
        } else {
            (
                "ssl = no".to_string(),
                // No implicit-TLS listener without TLS (Dovecot::start_tls).
                "  inet_listener imaps {\n    port = 0\n  }\n".to_string(),
            )
        };
        let (mechanisms, oauth_passdb) = match &self.introspection_url {
            Some(_) => (
                "plain login xoauth2 oauthbearer",
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  \
                     args = {d}/oauth2.conf.ext\n}}\n"
                ),
            ),
            None => ("plain login", String::new()),
        };
        let mut conf = format!(
            r#"# Private Dovecot instance of mailtriage's test harness (crates/testkit).
instance_name = {instance}
base_dir = {d}/run
state_dir = {d}/state
protocols = imap
listen = 127.0.0.1
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
auth_verbose = yes
# Answer a wrong password at once (the packaged default waits 2 s).
auth_failure_delay = 0
{ssl}
# Plaintext LOGIN is allowed without TLS too (loopback tests).
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
first_valid_uid = 1
mail_location = maildir:{d}/mail/%u
mail_fsync = never
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
{oauth_passdb}userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
namespace inbox {{
  inbox = yes
  mailbox Archive {{
    special_use = \Archive
  }}
  mailbox Drafts {{
    special_use = \Drafts
  }}
  mailbox Junk {{
    special_use = \Junk
  }}
  mailbox Sent {{
    special_use = \Sent
  }}
  mailbox Trash {{
    special_use = \Trash
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
{imaps}"#,
            instance = self.instance,
            uid = id.mail_uid,
            gid = id.mail_gid,
            port = self.port,
            ssl = ssl,
            imaps = imaps,
            mechanisms = mechanisms,
            oauth_passdb = oauth_passdb,
        );
        // Not root: no chroot, and every service runs as this user.
        let chroot = if id.root { "" } else { "  chroot =\n" };
        let _ = write!(
            conf,
            r#"{chroot}}}
service anvil {{
{chroot}  # No auth penalty: the packaged default delays each login from an IP
  # after a failed one (2 s, doubling up to 15 s), which would make every
  # test after a wrong-password test wait.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"#
        );
        if !id.root {
            let _ = writeln!(
                conf,
                "default_internal_user = {u}\ndefault_login_user = {u}\n\
                 default_internal_group = {g}",
                u = id.user_name,
                g = id.group_name
            );
        }
        conf
    }

    /// A connection (greeting read, not logged in) whose errors carry this
    /// server's log tail.
    pub fn connect(&self) -> Result<ImapClient, String> {
        ImapClient::connect_logged(self.port, Some(self.dir.path().join("dovecot.log")))
    }

    /// A connection logged in as `user` with its current password; panics
    /// with the log tail if that fails.
    pub fn client(&self, user: &str) -> ImapClient {
        let mut client = self
            .connect()
            .unwrap_or_else(|e| panic!("connect to Dovecot: {e}"));
        if let Err(e) = client.login(user, self.password(user)) {
            panic!("LOGIN {user}: {e}");
        }
        client
    }

    fn run_as<T>(
        &self,
        user: &str,
        what: &str,
        f: impl FnOnce(&mut ImapClient) -> Result<T, String>,
    ) -> T {
        let mut client = self.client(user);
        let result = f(&mut client);
        let _ = client.logout();
        // The client's errors carry the log tail already.
        result.unwrap_or_else(|e| panic!("{what} as {user}: {e}"))
    }

    /// On-disk Maildir++ dir of `folder` ("INBOX", or an IMAP name such as
    /// "Archive" or "Archive.2024" with Dovecot's default separator '.').
    fn folder_dir(&self, user: &str, folder: &str) -> PathBuf {
        assert!(
            !folder.is_empty() && !folder.contains('/') && folder.is_ascii(),
            "folder {folder:?}: use an ASCII IMAP name with '.' as separator"
        );
        let root = self.maildir(user);
        if folder.eq_ignore_ascii_case("INBOX") {
            root
        } else {
            root.join(format!(".{folder}"))
        }
    }

    fn mkdir_owned(&self, path: &Path) {
        if path.is_dir() {
            return;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.identity.own(path);
    }

    /// Create the user's Maildir and `folder` on disk if missing.
    fn ensure_folder(&self, user: &str, folder: &str) -> PathBuf {
        let root = self.maildir(user);
        for dir in [
            root.clone(),
            root.join("cur"),
            root.join("new"),
            root.join("tmp"),
        ] {
            self.mkdir_owned(&dir);
        }
        let dir = self.folder_dir(user, folder);
        if dir != root {
            for sub in [
                dir.clone(),
                dir.join("cur"),
                dir.join("new"),
                dir.join("tmp"),
            ] {
                self.mkdir_owned(&sub);
            }
            let marker = dir.join("maildirfolder");
            if !marker.exists() {
                write_file(&marker, b"");
                self.identity.own(&marker);
            }
        }
        dir
    }

    /// Deliver `raw` straight into the user's Maildir folder the way a local
    /// delivery agent does (tmp/ then rename into new/): the message is new,
    /// unseen and \Recent. Creates the folder on disk if needed. Dovecot sees
    /// it at its next sync, and an IDLE client is told (inotify). Returns the
    /// file's path.
    pub fn deliver(&self, user: &str, folder: &str, raw: &[u8]) -> PathBuf {
        self.deliver_to(user, folder, raw, None)
    }

    /// Like [`Dovecot::deliver`], but into `cur/NAME:2,FLAGS` with Maildir flag
    /// letters (`""` none, `"S"` \Seen, `"FS"` \Flagged \Seen; sorted ASCII):
    /// the fast way to load many messages, which also sets flags.
    pub fn deliver_with_flags(&self, user: &str, folder: &str, raw: &[u8], flags: &str) -> PathBuf {
        self.deliver_to(user, folder, raw, Some(flags))
    }

    /// Like [`Dovecot::deliver`], received at `received`: the file's mtime,
    /// which Dovecot reports as the message's INTERNALDATE.
    pub fn deliver_received(
        &self,
        user: &str,
        folder: &str,
        raw: &[u8],
        received: SystemTime,
    ) -> PathBuf {
        let path = self.deliver_to(user, folder, raw, None);
        let file = fs::File::options()
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        file.set_modified(received)
            .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
        path
    }

    /// Gives `folder` a new UIDVALIDITY (the old one plus one), as a server
    /// migration or a rebuilt mailbox does: the server is stopped, the
    /// folder's `dovecot-uidlist` replaced by an empty one under the new
    /// UIDVALIDITY and its indexes removed, and the server started again.
    /// Its messages and their flags stay, with new UIDs from 1. Returns the
    /// new UIDVALIDITY.
    pub fn reset_uid_validity(&mut self, user: &str, folder: &str) -> u32 {
        let old = self.uid_validity(user, folder);
        let new = old + 1;
        self.stop();
        let dir = self.folder_dir(user, folder);
        let root = self.maildir(user);
        for d in [&dir, &root] {
            for entry in fs::read_dir(d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
                let path = entry.expect("a directory entry").path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let index = name.as_deref().is_some_and(|n| {
                    n.starts_with("dovecot.index") || n.starts_with("dovecot.list.index")
                });
                if index {
                    fs::remove_file(&path)
                        .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
                }
            }
        }
        let uidlist = dir.join("dovecot-uidlist");
        write_file(&uidlist, format!("3 V{new} N1\n").as_bytes());
        self.identity.own(&uidlist);
        if let Err(e) = relaunch(self) {
            panic!("Dovecot did not restart: {e}\n{}", self.log_tail());
        }
        let now = self.uid_validity(user, folder);
        assert_eq!(now, new, "the UIDVALIDITY of {folder} did not change");
        new
    }

    fn deliver_to(&self, user: &str, folder: &str, raw: &[u8], flags: Option<&str>) -> PathBuf {
        let dir = self.ensure_folder(user, folder);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("system clock before 1970");
        let name = format!(
            "{}.M{}P{}Q{}.mailtriage-harness",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            unique()
        );
        let tmp = dir.join("tmp").join(&name);
        write_file(&tmp, raw);
        set_mode(&tmp, 0o600);
        self.identity.own(&tmp);
        let dest = match flags {
            None => dir.join("new").join(&name),
            Some(flags) => dir.join("cur").join(format!("{name}:2,{flags}")),
        };
        fs::rename(&tmp, &dest)
            .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), dest.display()));
        dest
    }

    /// APPEND `raw` to `folder` over IMAP as `user` (creating the folder first
    /// if it does not exist), the way a message arrives from outside. Returns
    /// the new message's UID (from the APPENDUID response).
    pub fn append(&self, user: &str, folder: &str, raw: &[u8]) -> u32 {
        self.append_with_flags(user, folder, raw, &[])
    }

    /// [`Dovecot::append`] with flags such as `\Seen`.
    pub fn append_with_flags(&self, user: &str, folder: &str, raw: &[u8], flags: &[&str]) -> u32 {
        self.run_as(user, &format!("APPEND to {folder}"), |c| {
            if !c.folder_exists(folder)? {
                c.command(&format!("CREATE {}", quote(folder)))?;
            }
            c.append(folder, flags, raw)
        })
    }

    /// Create a folder over IMAP (no error if it exists).
    pub fn create_folder(&self, user: &str, folder: &str) {
        self.run_as(user, &format!("CREATE {folder}"), |c| {
            if !c.folder_exists(folder)? {
                c.command(&format!("CREATE {}", quote(folder)))?;
            }
            Ok(())
        })
    }

    /// (UID, flags) of every message in `folder`, read over IMAP with
    /// `UID FETCH 1:* (FLAGS)` after EXAMINE (read-only: changes nothing),
    /// sorted by UID. Flags as the server sends them, e.g. `\Seen`, except
    /// `\Recent` (per session), which is left out.
    pub fn flags(&self, user: &str, folder: &str) -> Vec<(u32, Vec<String>)> {
        self.run_as(user, &format!("read flags of {folder}"), |c| {
            c.examine(folder)?;
            Ok(c.uid_fetch("1:*", "(UID FLAGS)")?
                .into_iter()
                .map(|m| (m.uid, m.flags))
                .collect())
        })
    }

    /// UIDs of the messages in `folder` that have `\Seen`.
    pub fn seen(&self, user: &str, folder: &str) -> Vec<u32> {
        self.flags(user, folder)
            .into_iter()
            .filter(|(_, flags)| flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
            .map(|(uid, _)| uid)
            .collect()
    }

    /// Number of messages in `folder` (STATUS MESSAGES, i.e. EXISTS).
    pub fn count(&self, user: &str, folder: &str) -> u32 {
        self.run_as(user, &format!("STATUS {folder}"), |c| {
            c.status(folder, "MESSAGES")
        })
    }

    /// Every message in `folder` with UID, flags and body
    /// (`UID FETCH 1:* (UID FLAGS BODY.PEEK[])`, read-only), sorted by UID.
    pub fn fetch(&self, user: &str, folder: &str) -> Vec<ImapMessage> {
        self.run_as(user, &format!("fetch {folder}"), |c| {
            c.examine(folder)?;
            c.uid_fetch("1:*", "(UID FLAGS BODY.PEEK[])")
        })
    }

    /// UIDVALIDITY of `folder`.
    pub fn uid_validity(&self, user: &str, folder: &str) -> u32 {
        self.run_as(user, &format!("STATUS {folder}"), |c| {
            c.status(folder, "UIDVALIDITY")
        })
    }

    /// Names of the user's folders (LIST "" "*"), sorted.
    pub fn folders(&self, user: &str) -> Vec<String> {
        self.run_as(user, "LIST", |c| c.list())
    }
}

impl Launch for Dovecot {
    /// Writes the config for the current port(s) and starts the master.
    fn launch(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("dovecot.conf");
        write_file(&conf, self.config().as_bytes());
        let _ = fs::remove_file(self.dir.path().join("run").join("master.pid"));
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("dovecot.stderr"))
            .map_err(|e| format!("open dovecot.stderr: {e}"))?;
        let child = Command::new(dovecot_binary())
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(
                stderr
                    .try_clone()
                    .map_err(|e| format!("dup stderr file: {e}"))?,
            )
            .stderr(stderr)
            // Its own process group, so stop() can kill every process it forks.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn {} -F -c {}: {e}", dovecot_binary(), conf.display()))?;
        let port = self.port;
        self.process
            .start(child, |child| wait_ready(child, port, "* OK"))
    }

    fn log(&self) -> String {
        Dovecot::log(self)
    }
}
