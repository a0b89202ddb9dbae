//! The SQLite store: schema migrations, VM and image rows, and allocation of
//! names, addresses and vsock CIDs in one transaction.
//!
//! WAL mode with `synchronous = NORMAL`: a crash or `kill -9` of banger never
//! corrupts the database or loses a committed transaction (the WAL is in the
//! OS page cache); only a power loss can drop the last few commits, which
//! reconcile and `banger gc` repair like any other interrupted command.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::StateError;
use super::config::Subnet;
use super::model::{
    BadVm, CowStrategy, HostFinding, Image, Pending, Pool, PoolMember, PoolSpec, PublishedPort, Vm,
    VmId, VmName, VmState, VmmChoice, VmmKind, mac_for, now,
};

/// Schema migrations; `user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE images (
        name        TEXT PRIMARY KEY,
        source      TEXT NOT NULL,
        has_initrd  INTEGER NOT NULL,
        is_default  INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE vms (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        image        TEXT NOT NULL,
        vcpus        INTEGER NOT NULL,
        memory_mib   INTEGER NOT NULL,
        disk_size    INTEGER NOT NULL,
        work_size    INTEGER NOT NULL,
        ip           TEXT NOT NULL UNIQUE,
        mac          TEXT NOT NULL UNIQUE,
        cid          INTEGER NOT NULL UNIQUE,
        nat          INTEGER NOT NULL,
        cow_strategy TEXT,
        desired      TEXT NOT NULL,
        expires_at   INTEGER,
        last_error   TEXT,
        creating     INTEGER NOT NULL DEFAULT 1,
        created_at   INTEGER NOT NULL
    );
",
    r"
    -- An operation under way is recorded as itself, not as a last error.
    ALTER TABLE vms ADD COLUMN pending TEXT;
    UPDATE vms SET pending = 'create' WHERE creating = 1;
    UPDATE vms SET pending = 'start', last_error = NULL
        WHERE pending IS NULL AND desired = 'running' AND last_error IS NOT NULL;
    UPDATE vms SET pending = 'stop', last_error = NULL
        WHERE pending IS NULL AND last_error LIKE 'stopping VM % did not finish%';
    UPDATE vms SET pending = 'delete', last_error = NULL
        WHERE pending IS NULL AND last_error LIKE 'deletion did not finish%';
    ALTER TABLE vms DROP COLUMN creating;
    -- One name for one thing: the vsock CID is `vsock_cid` everywhere.
    ALTER TABLE vms RENAME COLUMN cid TO vsock_cid;
",
    r"
    -- Published ports, as a JSON array of {addr, host_port, guest_port, proto}.
    ALTER TABLE vms ADD COLUMN published TEXT NOT NULL DEFAULT '[]';
",
    r"
    -- The VMM a VM runs under (picked at each start), and its --vmm, if any.
    ALTER TABLE vms ADD COLUMN vmm TEXT NOT NULL DEFAULT 'firecracker';
    ALTER TABLE vms ADD COLUMN vmm_choice TEXT;
    -- Whether Firecracker runs guests on this host, per host kernel.
    CREATE TABLE host_findings (
        vmm       TEXT PRIMARY KEY,
        kernel    TEXT NOT NULL,
        runs      INTEGER NOT NULL,
        found_at  INTEGER NOT NULL,
        detail    TEXT NOT NULL
    );
",
    r"
    -- Each address as its number too, so that allocation looks up the
    -- highest one taken in an index instead of reading every row; `ip`
    -- stays the address everything reads. `fill_ip_num` computes the
    -- numbers of the rows already there (NULL for a text that is no
    -- address). Not UNIQUE: `ip` is, and a row copied by hand carries its
    -- source's number until allocation notices and recomputes them.
    -- `name` and `vsock_cid` are UNIQUE, so indexed, since schema 1.
    ALTER TABLE vms ADD COLUMN ip_num INTEGER;
    CREATE INDEX vms_ip_num ON vms (ip_num);
",
    r"
    -- Where an image committed from a VM came from, as JSON
    -- {vm, vm_id, image}; NULL for built and imported images.
    ALTER TABLE images ADD COLUMN committed_from TEXT;
",
    r"
    -- Warm pools, one per image: how many ready VMs to keep, and their
    -- spec (disk_size NULL: the image's root filesystem size).
    CREATE TABLE pools (
        image       TEXT PRIMARY KEY,
        size        INTEGER NOT NULL,
        vcpus       INTEGER NOT NULL,
        memory_mib  INTEGER NOT NULL,
        disk_size   INTEGER,
        work_size   INTEGER NOT NULL,
        nat         INTEGER NOT NULL,
        max_age     INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    -- The VMs that belong to a pool: ready (booted, answering) or still
    -- being made. A claim removes the VM's row here and renames it.
    CREATE TABLE pool_vms (
        vm_id  TEXT PRIMARY KEY,
        image  TEXT NOT NULL,
        ready  INTEGER NOT NULL DEFAULT 0
    );
",
];

/// The schema whose step adds `ip_num`: [`fill_ip_num`] runs right after it.
const IP_NUM_SCHEMA: usize = 5;

/// The vsock CIDs a guest can have: 0-2 are the hypervisor's, the host's
/// and reserved; `u32::MAX` is "any".
const GUEST_CIDS: (u32, u32) = (3, u32::MAX - 1);

/// How long a command waits for another's write transaction, unless
/// `BANGER_BUSY_TIMEOUT` (a duration such as `2s`) says otherwise.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn busy_timeout() -> Result<Duration, StateError> {
    Ok(crate::env::Env::get()
        .busy_timeout()?
        .unwrap_or(BUSY_TIMEOUT))
}

/// Everything about a VM chosen before its row exists.
#[derive(Debug, Clone)]
pub struct NewVm {
    pub name: Option<VmName>,
    pub image: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub disk_size: u64,
    pub work_size: u64,
    pub nat: bool,
    pub published: Vec<PublishedPort>,
    pub expires_at: Option<i64>,
    /// The VMM it would run under now (recorded again at each start).
    pub vmm: VmmKind,
    pub vmm_choice: Option<VmmChoice>,
    /// The image whose warm pool this VM is made for, if it is one: the
    /// insert fails once that pool is gone.
    pub pool: Option<String>,
}

/// What a claim gives the pool VM it takes.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Its new name; `None` picks one with the name picker.
    pub name: Option<VmName>,
    pub expires_at: Option<i64>,
    pub vmm_choice: Option<VmmChoice>,
}

/// An open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The guest subnet every VM row's address must lie in, once known.
    subnet: Option<Subnet>,
}

/// One row of table `vms`: the VM, or what makes the row unusable.
pub type VmRow = Result<Vm, BadVm>;

impl Store {
    /// Opens (creating if needed, 0600) and migrates the database.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let db = |e| StateError::db(path, e);
        let busy_timeout = busy_timeout()?;
        let conn = Connection::open(path).map_err(db)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| StateError::Io {
                path: path.to_owned(),
                source,
            },
        )?;
        conn.busy_timeout(busy_timeout).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        let store = Self {
            conn,
            path: path.to_owned(),
            subnet: None,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Checks every VM row read from now on against `subnet`: a row whose
    /// address lies outside it is reported as unusable.
    pub fn with_subnet(mut self, subnet: Subnet) -> Self {
        self.subnet = Some(subnet);
        self
    }

    /// Opens the database read-only without creating or migrating it
    /// (shell completion); `None` when it does not exist or cannot be read.
    pub fn open_read_only(path: &Path) -> Option<Self> {
        let conn =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        conn.busy_timeout(Duration::from_millis(200)).ok()?;
        Some(Self {
            conn,
            path: path.to_owned(),
            subnet: None,
        })
    }

    fn migrate(&self) -> Result<(), StateError> {
        let path = self.path.clone();
        let db = |e| StateError::db(&path, e);
        // The common case, a database already at this schema, reads its
        // version without a write transaction: no lock taken from other
        // commands, no write and fsync on every invocation.
        let current: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        if current == MIGRATIONS.len() as i64 {
            return Ok(());
        }
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(db)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StateError::DbTooNew {
                path: path.clone(),
                found: version,
                known,
            });
        }
        for (done, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(migration).map_err(db)?;
            if done + 1 == IP_NUM_SCHEMA {
                fill_ip_num(&tx).map_err(db)?;
            }
        }
        tx.pragma_update(None, "user_version", known).map_err(db)?;
        tx.commit().map_err(db)
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |e| StateError::db(&self.path, e)
    }

    /// `PRAGMA integrity_check` result (`ok` when healthy).
    pub fn integrity_check(&self) -> Result<String, StateError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(self.db())
    }

    // ---- VMs ----

    /// Allocates name, IP, MAC and CID and inserts the row, atomically.
    /// `pick_name` proposes a name for the n-th attempt when none was given.
    ///
    /// The address is the one after the highest taken in `subnet`, and the
    /// CID the one after the highest taken: each an index lookup, however
    /// many VMs there are. A deleted VM's address is not handed out again
    /// at once, on purpose: a `known_hosts` line or a cached DNS answer
    /// about the deleted VM then names no other VM. Only once the top of
    /// the range is taken is the lowest free value found (an index walk up
    /// to the first gap); none left is [`StateError::SubnetFull`].
    pub fn insert_vm(
        &self,
        new: &NewVm,
        id: &VmId,
        subnet: &Subnet,
        pick_name: &dyn Fn(u32) -> VmName,
    ) -> Result<Vm, StateError> {
        let path = self.path.clone();
        let db = |e| StateError::db(&path, e);
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(db)?;
        let taken = |name: &VmName| -> Result<bool, StateError> {
            tx.query_row("SELECT 1 FROM vms WHERE name = ?1", [name], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
                .map_err(db)
        };
        let name = match &new.name {
            Some(name) if taken(name)? => return Err(StateError::NameTaken(name.to_string())),
            Some(name) => name.clone(),
            None => {
                let mut attempt = 0;
                loop {
                    let candidate = pick_name(attempt);
                    if !taken(&candidate)? {
                        break candidate;
                    }
                    attempt += 1;
                }
            }
        };
        // A host port another VM publishes is refused in the transaction
        // that would take it.
        if !new.published.is_empty() {
            let mut stmt = tx
                .prepare("SELECT name, published FROM vms WHERE published != '[]'")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(db)?;
            for row in rows {
                let (other, published) = row.map_err(db)?;
                let theirs: Vec<PublishedPort> =
                    serde_json::from_str(&published).unwrap_or_default();
                if let Some(port) = new
                    .published
                    .iter()
                    .find(|mine| theirs.iter().any(|t| mine.clashes_with(t)))
                {
                    return Err(StateError::PortTaken {
                        port: format!("{}:{}/{}", port.addr, port.host_port, port.proto.as_str()),
                        vm: other,
                    });
                }
            }
        }
        if let Some(image) = &new.pool {
            let exists = tx
                .query_row("SELECT 1 FROM pools WHERE image = ?1", [image], |_| Ok(()))
                .optional()
                .map_err(db)?
                .is_some();
            if !exists {
                return Err(StateError::NoSuchPool(image.clone()));
            }
            tx.execute(
                "INSERT INTO pool_vms (vm_id, image, ready) VALUES (?1, ?2, 0)",
                params![id, image],
            )
            .map_err(db)?;
        }
        let (first, last) = guest_range(subnet);
        let mut ip = lowest_free(&tx, "ip_num", first, last).map_err(db)?;
        if let Some(candidate) = ip
            && ip_taken(&tx, candidate).map_err(db)?
        {
            // Some row's `ip_num` is not its `ip`'s (a row edited or copied
            // by hand): recompute them all, once, and look again.
            fill_ip_num(&tx).map_err(db)?;
            ip = lowest_free(&tx, "ip_num", first, last).map_err(db)?;
        }
        let ip = Ipv4Addr::from(ip.ok_or_else(|| StateError::SubnetFull(subnet.to_string()))?);
        let cid = lowest_free(&tx, "vsock_cid", GUEST_CIDS.0, GUEST_CIDS.1)
            .map_err(db)?
            .ok_or_else(|| {
                db(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE),
                    Some(format!(
                        "every vsock CID from {} to {} is taken",
                        GUEST_CIDS.0, GUEST_CIDS.1
                    )),
                ))
            })?;
        let vm = Vm {
            id: id.clone(),
            name,
            image: new.image.clone(),
            vcpus: new.vcpus,
            memory_mib: new.memory_mib,
            disk_size: new.disk_size,
            work_size: new.work_size,
            ip,
            mac: mac_for(ip),
            vsock_cid: cid,
            nat: new.nat,
            published: new.published.clone(),
            cow_strategy: None,
            vmm: new.vmm,
            vmm_choice: new.vmm_choice,
            pending: Some(Pending::Create),
            desired: VmState::Stopped,
            expires_at: new.expires_at,
            last_error: None,
            created_at: now(),
        };
        tx.execute(
            "INSERT INTO vms (id, name, image, vcpus, memory_mib, disk_size, work_size, ip, mac, vsock_cid,
                              nat, cow_strategy, desired, expires_at, last_error, created_at, pending,
                              published, vmm, vmm_choice, ip_num)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                     ?19, ?20, ?21)",
            params![
                vm.id,
                vm.name,
                vm.image,
                vm.vcpus,
                vm.memory_mib,
                vm.disk_size as i64,
                vm.work_size as i64,
                vm.ip.to_string(),
                vm.mac,
                vm.vsock_cid,
                vm.nat,
                vm.cow_strategy.map(CowStrategy::as_str),
                vm.desired.as_str(),
                vm.expires_at,
                vm.last_error,
                vm.created_at,
                vm.pending.map(Pending::as_str),
                published_json(&vm.published),
                vm.vmm.as_str(),
                vm.vmm_choice.map(VmmChoice::as_str),
                u32::from(vm.ip),
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(vm)
    }

    /// Every usable VM; unusable rows are left out (see [`Store::scan_vms`]).
    pub fn list_vms(&self) -> Result<Vec<Vm>, StateError> {
        Ok(self.scan_vms()?.into_iter().flatten().collect())
    }

    /// Every VM row, each read on its own: one corrupt row is reported as
    /// a [`BadVm`] and does not hide the others.
    pub fn scan_vms(&self) -> Result<Vec<VmRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{} ORDER BY created_at, name", select_vms()))
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |row| Ok(self.read_row(row)))
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// Unusable VM rows only.
    pub fn bad_vms(&self) -> Result<Vec<BadVm>, StateError> {
        Ok(self
            .scan_vms()?
            .into_iter()
            .filter_map(Result::err)
            .collect())
    }

    fn read_row(&self, row: &Row<'_>) -> VmRow {
        vm_from_row(row)
            .and_then(|vm| check_vm(vm, self.subnet.as_ref()))
            .map_err(|why| BadVm {
                rowid: row.get(vm_column("rowid")).unwrap_or_default(),
                id: raw_text(row, vm_column("id")),
                name: raw_text(row, vm_column("name")),
                why,
            })
    }

    /// The row named `name`, read and checked; an unusable one is
    /// [`StateError::BadVm`].
    fn one_vm(&self, sql: &str, key: &dyn rusqlite::ToSql) -> Result<Option<Vm>, StateError> {
        let row = self
            .conn
            .query_row(sql, [key], |row| Ok(self.read_row(row)))
            .optional()
            .map_err(self.db())?;
        row.transpose()
            .map_err(|bad| StateError::BadVm(Box::new(bad)))
    }

    /// Names only, for completion.
    pub fn vm_names(&self) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM vms ORDER BY name")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |r| Ok(r.get::<_, String>(0).ok()))
            .map_err(self.db())?;
        Ok(rows.filter_map(|name| name.ok().flatten()).collect())
    }

    pub fn find_vm(&self, name: &str) -> Result<Option<Vm>, StateError> {
        self.one_vm(&format!("{} WHERE name = ?1", select_vms()), &name)
    }

    pub fn vm(&self, name: &str) -> Result<Vm, StateError> {
        self.find_vm(name)?
            .ok_or_else(|| StateError::NoSuchVm(name.to_owned()))
    }

    pub fn vm_by_id(&self, id: &VmId) -> Result<Option<Vm>, StateError> {
        self.one_vm(&format!("{} WHERE id = ?1", select_vms()), id)
    }

    /// Removes an unusable row, and nothing else.
    pub fn delete_bad_vm(&self, bad: &BadVm) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM vms WHERE rowid = ?1", [bad.rowid])
            .map(drop)
            .map_err(self.db())
    }

    /// Records the desired state, the operation under way and the last
    /// error in one write.
    pub fn set_state(
        &self,
        id: &VmId,
        desired: VmState,
        pending: Option<Pending>,
        last_error: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE vms SET desired = ?2, pending = ?3, last_error = ?4 WHERE id = ?1",
                params![
                    id,
                    desired.as_str(),
                    pending.map(Pending::as_str),
                    last_error
                ],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// Records the finished disks: the VM is now complete, and `then` is
    /// the operation that follows at once (a start), if any.
    pub fn finish_creating(
        &self,
        id: &VmId,
        strategy: CowStrategy,
        then: Option<Pending>,
        desired: VmState,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE vms SET cow_strategy = ?2, pending = ?3, desired = ?4 WHERE id = ?1",
                params![
                    id,
                    strategy.as_str(),
                    then.map(Pending::as_str),
                    desired.as_str()
                ],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// Records the VMM a VM is started under.
    pub fn set_vmm(&self, id: &VmId, vmm: VmmKind) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE vms SET vmm = ?2 WHERE id = ?1",
                params![id, vmm.as_str()],
            )
            .map(drop)
            .map_err(self.db())
    }

    // ---- what banger found out about the host ----

    /// The finding about running guests under `vmm`, if any.
    pub fn host_finding(&self, vmm: VmmKind) -> Result<Option<HostFinding>, StateError> {
        self.conn
            .query_row(
                "SELECT kernel, runs, found_at, detail FROM host_findings WHERE vmm = ?1",
                [vmm.as_str()],
                |r| {
                    Ok(HostFinding {
                        kernel: r.get(0)?,
                        runs: r.get(1)?,
                        found_at: r.get(2)?,
                        detail: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(self.db())
    }

    /// Records a finding about `vmm`, replacing the one before.
    pub fn record_host_finding(
        &self,
        vmm: VmmKind,
        finding: &HostFinding,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO host_findings (vmm, kernel, runs, found_at, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    vmm.as_str(),
                    finding.kernel,
                    finding.runs,
                    finding.found_at,
                    finding.detail
                ],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// Forgets what was found about `vmm` (`doctor --boot` checks again).
    pub fn forget_host_finding(&self, vmm: VmmKind) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM host_findings WHERE vmm = ?1", [vmm.as_str()])
            .map(drop)
            .map_err(self.db())
    }

    /// Sets (or, with `None`, clears) a VM's expiry time.
    pub fn set_expiry(&self, id: &VmId, expires_at: Option<i64>) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE vms SET expires_at = ?2 WHERE id = ?1",
                params![id, expires_at],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// Removes the VM's row and, in the same transaction, its pool membership.
    pub fn delete_vm(&self, id: &VmId) -> Result<(), StateError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(self.db())?;
        tx.execute("DELETE FROM pool_vms WHERE vm_id = ?1", [id])
            .and_then(|_| tx.execute("DELETE FROM vms WHERE id = ?1", [id]))
            .map_err(self.db())?;
        tx.commit().map_err(self.db())
    }

    // ---- warm pools ----

    /// Creates or replaces `pool`'s row (its VMs stay: the caller replaces
    /// those whose spec changed).
    pub fn set_pool(&self, pool: &Pool) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO pools (image, size, vcpus, memory_mib, disk_size,
                                               work_size, nat, max_age, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    pool.image,
                    pool.size,
                    pool.spec.vcpus,
                    pool.spec.memory_mib,
                    pool.spec.disk_size.map(|s| s as i64),
                    pool.spec.work_size as i64,
                    pool.spec.nat,
                    pool.max_age as i64,
                    pool.created_at,
                ],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// Every pool, by image name.
    pub fn pools(&self) -> Result<Vec<Pool>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM pools ORDER BY image")
            .map_err(self.db())?;
        let rows = stmt.query_map([], pool_from_row).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    pub fn find_pool(&self, image: &str) -> Result<Option<Pool>, StateError> {
        self.conn
            .query_row(
                "SELECT * FROM pools WHERE image = ?1",
                [image],
                pool_from_row,
            )
            .optional()
            .map_err(self.db())
    }

    /// Removes `image`'s pool row; whether there was one. Its VMs stay
    /// members until deleted (the caller deletes them).
    pub fn delete_pool(&self, image: &str) -> Result<bool, StateError> {
        self.conn
            .execute("DELETE FROM pools WHERE image = ?1", [image])
            .map(|n| n > 0)
            .map_err(self.db())
    }

    /// Every pool VM, by VM id.
    pub fn pool_members(&self) -> Result<std::collections::HashMap<VmId, PoolMember>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT vm_id, image, ready FROM pool_vms")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    PoolMember {
                        image: r.get(1)?,
                        ready: r.get(2)?,
                    },
                ))
            })
            .map_err(self.db())?;
        let mut members = std::collections::HashMap::new();
        for row in rows {
            let (id, member) = row.map_err(self.db())?;
            // A member row naming no valid id names no VM either.
            if let Some(id) = VmId::parse(&id) {
                members.insert(id, member);
            }
        }
        Ok(members)
    }

    /// Marks pool VM `id` ready to be claimed; false if it is no longer a
    /// member (its pool was removed, or it was deleted, meanwhile).
    pub fn mark_pool_ready(&self, id: &VmId) -> Result<bool, StateError> {
        self.conn
            .execute("UPDATE pool_vms SET ready = 1 WHERE vm_id = ?1", [id])
            .map(|n| n > 0)
            .map_err(self.db())
    }

    /// Takes ready pool VM `id` out of its pool and gives it `claim`'s name,
    /// expiry and VMM choice, its creation time now and `claim` pending, all
    /// in one transaction: `None` if it is not (or no longer) a ready member,
    /// so two claims never get one VM. A name another VM has is
    /// [`StateError::NameTaken`], and the VM stays in its pool.
    pub fn claim_pool_vm(
        &self,
        id: &VmId,
        claim: &Claim,
        pick_name: &dyn Fn(u32) -> VmName,
    ) -> Result<Option<Vm>, StateError> {
        let path = self.path.clone();
        let db = |e| StateError::db(&path, e);
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(db)?;
        let taken = tx
            .execute("DELETE FROM pool_vms WHERE vm_id = ?1 AND ready = 1", [id])
            .map_err(db)?;
        if taken == 0 {
            return Ok(None);
        }
        let free = |name: &VmName| -> Result<bool, StateError> {
            tx.query_row("SELECT 1 FROM vms WHERE name = ?1", [name], |_| Ok(()))
                .optional()
                .map(|r| r.is_none())
                .map_err(db)
        };
        let name = match &claim.name {
            Some(name) if !free(name)? => return Err(StateError::NameTaken(name.to_string())),
            Some(name) => name.clone(),
            None => {
                let mut attempt = 0;
                loop {
                    let candidate = pick_name(attempt);
                    if free(&candidate)? {
                        break candidate;
                    }
                    attempt += 1;
                }
            }
        };
        tx.execute(
            "UPDATE vms SET name = ?2, pending = ?3, expires_at = ?4, vmm_choice = ?5,
                            created_at = ?6
             WHERE id = ?1",
            params![
                id,
                name,
                Pending::Claim.as_str(),
                claim.expires_at,
                claim.vmm_choice.map(VmmChoice::as_str),
                now()
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        self.vm_by_id(id)
    }

    /// Records a claim as finished: the VM is an ordinary one now.
    pub fn finish_claim(&self, id: &VmId) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE vms SET pending = NULL WHERE id = ?1 AND pending = ?2",
                params![id, Pending::Claim.as_str()],
            )
            .map(drop)
            .map_err(self.db())
    }

    // ---- images ----

    /// Registers an image; the first one becomes the default.
    pub fn insert_image(&self, image: &Image) -> Result<(), StateError> {
        let path = self.path.clone();
        let db = |e| StateError::db(&path, e);
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(db)?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM images WHERE name = ?1",
                [&image.name],
                |_| Ok(()),
            )
            .optional()
            .map_err(db)?
            .is_some();
        if exists {
            return Err(StateError::ImageExists(image.name.clone()));
        }
        let have_default = tx
            .query_row("SELECT count(*) FROM images WHERE is_default", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(db)?
            > 0;
        if image.is_default {
            tx.execute("UPDATE images SET is_default = 0", [])
                .map_err(db)?;
        }
        let committed_from = image
            .committed_from
            .as_ref()
            .map(|from| serde_json::to_string(from).unwrap_or_default());
        tx.execute(
            "INSERT INTO images (name, source, has_initrd, is_default, created_at, committed_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                image.name,
                image.source,
                image.has_initrd,
                image.is_default || !have_default,
                image.created_at,
                committed_from
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    pub fn list_images(&self) -> Result<Vec<Image>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM images ORDER BY name")
            .map_err(self.db())?;
        let rows = stmt.query_map([], image_from_row).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    pub fn find_image(&self, name: &str) -> Result<Option<Image>, StateError> {
        self.conn
            .query_row(
                "SELECT * FROM images WHERE name = ?1",
                [name],
                image_from_row,
            )
            .optional()
            .map_err(self.db())
    }

    pub fn image(&self, name: &str) -> Result<Image, StateError> {
        self.find_image(name)?
            .ok_or_else(|| StateError::NoSuchImage(name.to_owned()))
    }

    pub fn default_image(&self) -> Result<Option<Image>, StateError> {
        self.conn
            .query_row("SELECT * FROM images WHERE is_default", [], image_from_row)
            .optional()
            .map_err(self.db())
    }

    pub fn set_default_image(&self, name: &str) -> Result<(), StateError> {
        let path = self.path.clone();
        let db = |e| StateError::db(&path, e);
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(db)?;
        tx.execute("UPDATE images SET is_default = 0", [])
            .map_err(db)?;
        let changed = tx
            .execute("UPDATE images SET is_default = 1 WHERE name = ?1", [name])
            .map_err(db)?;
        if changed == 0 {
            return Err(StateError::NoSuchImage(name.to_owned()));
        }
        tx.commit().map_err(db)
    }

    pub fn delete_image(&self, name: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM images WHERE name = ?1", [name])
            .map(drop)
            .map_err(self.db())
    }

    /// Names of VMs made from `image`.
    pub fn vms_using_image(&self, image: &str) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM vms WHERE image = ?1 ORDER BY name")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([image], |r| Ok(raw_text(r, 0)))
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// Names only, for completion.
    pub fn image_names(&self) -> Result<Vec<String>, StateError> {
        Ok(self.list_images()?.into_iter().map(|i| i.name).collect())
    }
}

/// A VM from its row, each column read as the type banger writes; the
/// error names the column and what is wrong with its value.
fn vm_from_row(row: &Row<'_>) -> Result<Vm, String> {
    let ip: String = column(row, "ip")?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("column ip: {ip:?} is not an IPv4 address"))?;
    let desired: String = column(row, "desired")?;
    Ok(Vm {
        id: column(row, "id")?,
        name: column(row, "name")?,
        image: column(row, "image")?,
        vcpus: column(row, "vcpus")?,
        memory_mib: column(row, "memory_mib")?,
        disk_size: size(row, "disk_size")?,
        work_size: size(row, "work_size")?,
        ip,
        mac: column(row, "mac")?,
        vsock_cid: column(row, "vsock_cid")?,
        nat: column(row, "nat")?,
        published: published_from_row(row)?,
        cow_strategy: text_enum(row, "cow_strategy", CowStrategy::parse)?,
        vmm: text_enum(row, "vmm", VmmKind::parse)?.unwrap_or(VmmKind::Firecracker),
        vmm_choice: text_enum(row, "vmm_choice", |t| VmmChoice::parse(t).ok())?,
        pending: text_enum(row, "pending", Pending::parse)?,
        desired: VmState::parse(&desired)
            .ok_or_else(|| format!("column desired: unknown value {desired:?}"))?,
        expires_at: column(row, "expires_at")?,
        last_error: column(row, "last_error")?,
        created_at: column(row, "created_at")?,
    })
}

/// The values banger derives or bounds, checked: the image name joins into
/// a path, the address must be a guest address of `subnet`, the MAC is the
/// address's, the CID one a guest can have, sizes and counts above zero.
fn check_vm(vm: Vm, subnet: Option<&Subnet>) -> Result<Vm, String> {
    super::parse::image_name(&vm.image).map_err(|e| format!("column image: {e}"))?;
    if let Some(subnet) = subnet
        && !is_guest_address(subnet, vm.ip)
    {
        return Err(format!(
            "column ip: {} is not a guest address of subnet {subnet}",
            vm.ip
        ));
    }
    if vm.mac != mac_for(vm.ip) {
        return Err(format!(
            "column mac: {:?} is not the MAC of {} ({})",
            vm.mac,
            vm.ip,
            mac_for(vm.ip)
        ));
    }
    // 0-2 are the hypervisor's, the host's and reserved; u32::MAX is "any".
    if !(3..u32::MAX).contains(&vm.vsock_cid) {
        return Err(format!(
            "column vsock_cid: {} is not a guest CID (3 to {})",
            vm.vsock_cid,
            u32::MAX - 1
        ));
    }
    for (column, value) in [
        ("vcpus", u64::from(vm.vcpus)),
        ("memory_mib", u64::from(vm.memory_mib)),
        ("disk_size", vm.disk_size),
        ("work_size", vm.work_size),
    ] {
        if value == 0 {
            return Err(format!("column {column}: 0"));
        }
    }
    if let Some(port) = vm
        .published
        .iter()
        .find(|p| p.host_port == 0 || p.guest_port == 0)
    {
        return Err(format!("column published: {port} names port 0"));
    }
    Ok(vm)
}

/// The first and last of `subnet`'s guest addresses as numbers: the range
/// [`Subnet::guest_addresses`] walks (after the gateway, before broadcast).
fn guest_range(subnet: &Subnet) -> (u32, u32) {
    let network = u32::from(subnet.network);
    let broadcast = network | (u32::MAX >> subnet.prefix_len);
    (network + 2, broadcast - 1)
}

/// Whether `ip` is one of `subnet`'s guest addresses.
fn is_guest_address(subnet: &Subnet, ip: Ipv4Addr) -> bool {
    let (first, last) = guest_range(subnet);
    (first..=last).contains(&u32::from(ip))
}

/// The queries [`lowest_free`] runs on integer `column` of `vms`: the
/// highest value in `?1..=?2`, whether value `?1` is held, and the lowest
/// value in `?1+1..=?2+1` whose predecessor is held and itself is not.
/// Values of another type (a corrupt row) are left out.
fn free_value_queries(column: &str) -> [String; 3] {
    [
        format!(
            "SELECT {column} FROM vms
             WHERE {column} BETWEEN ?1 AND ?2 AND typeof({column}) = 'integer'
             ORDER BY {column} DESC LIMIT 1"
        ),
        format!("SELECT 1 FROM vms WHERE {column} = ?1"),
        format!(
            "SELECT a.{column} + 1 FROM vms a
             WHERE a.{column} BETWEEN ?1 AND ?2 AND typeof(a.{column}) = 'integer'
               AND NOT EXISTS (SELECT 1 FROM vms b WHERE b.{column} = a.{column} + 1)
             ORDER BY a.{column} LIMIT 1"
        ),
    ]
}

/// The lowest value of integer `column` of `vms` in `first..=last` no row
/// holds, preferring one past the highest held: that is one index lookup;
/// only when `last` is held does it walk the index up to the first gap.
/// Values outside the range (another subnet's addresses) are left out.
fn lowest_free(
    tx: &Transaction<'_>,
    column: &str,
    first: u32,
    last: u32,
) -> rusqlite::Result<Option<u32>> {
    let [highest, held, gap] = free_value_queries(column);
    let highest: Option<u32> = tx
        .query_row(&highest, [first, last], |r| r.get(0))
        .optional()?;
    match highest {
        None => return Ok(Some(first)),
        Some(top) if top < last => return Ok(Some(top + 1)),
        Some(_) => {}
    }
    if tx
        .query_row(&held, [first], |_| Ok(()))
        .optional()?
        .is_none()
    {
        return Ok(Some(first));
    }
    tx.query_row(&gap, [first, last - 1], |r| r.get(0))
        .optional()
}

/// Whether a row's `ip` is `ip` (the text, whatever its `ip_num` says).
fn ip_taken(tx: &Transaction<'_>, ip: u32) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT 1 FROM vms WHERE ip = ?1",
        [Ipv4Addr::from(ip).to_string()],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

/// Sets every row's `ip_num` to the number of its `ip`, or NULL where that
/// is no IPv4 address (the row is reported unusable wherever it is read).
fn fill_ip_num(conn: &Connection) -> rusqlite::Result<()> {
    let rows: Vec<(i64, Option<u32>)> = {
        let mut stmt = conn.prepare("SELECT rowid, ip FROM vms")?;
        stmt.query_map([], |r| {
            let ip = match r.get_ref(1)? {
                rusqlite::types::ValueRef::Text(text) => std::str::from_utf8(text)
                    .ok()
                    .and_then(|t| t.parse::<Ipv4Addr>().ok())
                    .map(u32::from),
                _ => None,
            };
            Ok((r.get(0)?, ip))
        })?
        .collect::<Result<_, _>>()?
    };
    let mut update =
        conn.prepare("UPDATE vms SET ip_num = ?2 WHERE rowid = ?1 AND ip_num IS NOT ?2")?;
    for (rowid, ip) in rows {
        update.execute(params![rowid, ip])?;
    }
    Ok(())
}

/// A column as type `T`, the error naming it.
/// The columns a VM is read from, in the order [`select_vms`] selects
/// them: read by position, a row costs no lookup of names.
const VM_COLUMNS: [&str; 21] = [
    "rowid",
    "id",
    "name",
    "image",
    "vcpus",
    "memory_mib",
    "disk_size",
    "work_size",
    "ip",
    "mac",
    "vsock_cid",
    "nat",
    "published",
    "cow_strategy",
    "vmm",
    "vmm_choice",
    "pending",
    "desired",
    "expires_at",
    "last_error",
    "created_at",
];

/// `SELECT` of [`VM_COLUMNS`] from `vms`.
fn select_vms() -> String {
    format!("SELECT {} FROM vms", VM_COLUMNS.join(", "))
}

/// The position of VM column `name` in [`select_vms`]'s rows (one past the
/// last for a name not there, which reads as an invalid column).
fn vm_column(name: &str) -> usize {
    VM_COLUMNS
        .iter()
        .position(|c| *c == name)
        .unwrap_or(VM_COLUMNS.len())
}

fn column<T: rusqlite::types::FromSql>(row: &Row<'_>, name: &str) -> Result<T, String> {
    row.get(vm_column(name))
        .map_err(|e| format!("column {name}: {}", why(&e)))
}

/// A size in bytes (stored as a signed integer).
fn size(row: &Row<'_>, name: &str) -> Result<u64, String> {
    let value: i64 = column(row, name)?;
    u64::try_from(value).map_err(|_| format!("column {name}: {value} is negative"))
}

/// What is wrong with a value, without rusqlite's indices.
fn why(err: &rusqlite::Error) -> String {
    match err {
        rusqlite::Error::FromSqlConversionFailure(_, _, inner) => inner.to_string(),
        rusqlite::Error::IntegralValueOutOfRange(_, value) => format!("{value} is out of range"),
        rusqlite::Error::InvalidColumnType(_, _, kind) => format!("holds a value of type {kind}"),
        other => other.to_string(),
    }
}

/// A column's value as text for messages, whatever its type.
fn raw_text(row: &Row<'_>, index: usize) -> String {
    use rusqlite::types::ValueRef;
    match row.get_ref(index) {
        Ok(ValueRef::Text(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Ok(ValueRef::Integer(n)) => n.to_string(),
        Ok(ValueRef::Real(x)) => x.to_string(),
        Ok(ValueRef::Blob(_)) => "<blob>".to_owned(),
        Ok(ValueRef::Null) | Err(_) => String::new(),
    }
}

fn published_json(ports: &[PublishedPort]) -> String {
    serde_json::to_string(ports).unwrap_or_else(|_| "[]".to_owned())
}

fn published_from_row(row: &Row<'_>) -> Result<Vec<PublishedPort>, String> {
    let text: String = column(row, "published")?;
    serde_json::from_str(&text).map_err(|e| format!("column published: {e}"))
}

/// A nullable TEXT column holding one of an enum's names.
fn text_enum<T>(
    row: &Row<'_>,
    name: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, String> {
    let Some(text) = column::<Option<String>>(row, name)? else {
        return Ok(None);
    };
    parse(&text)
        .map(Some)
        .ok_or_else(|| format!("column {name}: unknown value {text:?}"))
}

fn pool_from_row(row: &Row<'_>) -> rusqlite::Result<Pool> {
    let size = |name: &str| -> rusqlite::Result<u64> {
        Ok(u64::try_from(row.get::<_, i64>(name)?).unwrap_or(0))
    };
    Ok(Pool {
        image: row.get("image")?,
        size: row.get("size")?,
        spec: PoolSpec {
            vcpus: row.get("vcpus")?,
            memory_mib: row.get("memory_mib")?,
            disk_size: row
                .get::<_, Option<i64>>("disk_size")?
                .and_then(|s| u64::try_from(s).ok()),
            work_size: size("work_size")?,
            nat: row.get("nat")?,
        },
        max_age: size("max_age")?,
        created_at: row.get("created_at")?,
    })
}

fn image_from_row(row: &Row<'_>) -> rusqlite::Result<Image> {
    Ok(Image {
        name: row.get("name")?,
        source: row.get("source")?,
        has_initrd: row.get("has_initrd")?,
        is_default: row.get("is_default")?,
        created_at: row.get("created_at")?,
        // Unreadable provenance leaves the image usable, of unknown origin.
        committed_from: row
            .get::<_, Option<String>>("committed_from")?
            .and_then(|text| serde_json::from_str(&text).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database at `path` made by the first `version` schema steps only,
    /// as an older banger left it.
    fn database_at_schema(path: &Path, version: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        for step in &MIGRATIONS[..version] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", version as u32)
            .unwrap();
        conn
    }

    /// A VM id from a small number.
    fn id(n: u32) -> VmId {
        VmId::parse(&format!("{n:010x}")).unwrap()
    }

    fn name(text: &str) -> VmName {
        VmName::parse(text).unwrap()
    }

    fn new_vm(vm_name: Option<&str>) -> NewVm {
        NewVm {
            name: vm_name.map(name),
            image: "base".into(),
            vcpus: 2,
            memory_mib: 512,
            disk_size: 1 << 30,
            work_size: 1 << 30,
            nat: true,
            published: Vec::new(),
            expires_at: None,
            vmm: VmmKind::Qemu,
            vmm_choice: Some(VmmChoice::Qemu),
            pool: None,
        }
    }

    fn subnet() -> Subnet {
        Subnet::parse("10.1.0.0/29").unwrap()
    }

    #[test]
    fn allocates_distinct_addresses_and_cids() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        let a = store
            .insert_vm(&new_vm(Some("a")), &id(0xa), &subnet(), &|_| unreachable!())
            .unwrap();
        let b = store
            .insert_vm(&new_vm(None), &id(0xb), &subnet(), &|n| {
                name(&format!("gen-{n}"))
            })
            .unwrap();
        assert_eq!((a.ip.to_string(), a.vsock_cid), ("10.1.0.2".to_string(), 3));
        assert_eq!(
            (b.name.as_str(), b.ip.to_string(), b.vsock_cid),
            ("gen-0", "10.1.0.3".to_string(), 4)
        );
        assert_eq!(b.mac, "06:00:0a:01:00:03");
        // A freed address and CID are not handed out again while there are
        // fresh ones above.
        store.delete_vm(&id(0xa)).unwrap();
        let c = store
            .insert_vm(&new_vm(Some("c")), &id(0xc), &subnet(), &|_| unreachable!())
            .unwrap();
        assert_eq!((c.ip.to_string(), c.vsock_cid), ("10.1.0.4".to_string(), 5));
        assert_eq!(c.mac, mac_for(c.ip));
    }

    /// Inserts VMs named `names` into `subnet`, returning their addresses.
    fn insert_all(store: &Store, names: &[&str], subnet: &Subnet) -> Vec<String> {
        names
            .iter()
            .map(|n| {
                let vm = store
                    .insert_vm(
                        &new_vm(Some(n)),
                        &id(u32::from(n.as_bytes()[0])),
                        subnet,
                        &|_| unreachable!(),
                    )
                    .unwrap();
                vm.ip.to_string()
            })
            .collect()
    }

    #[test]
    fn freed_addresses_are_reused_once_the_top_of_the_range_is_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        // 10.1.0.0/29: guests .2 to .6.
        insert_all(&store, &["a", "b", "c", "d", "e"], &subnet());
        for gone in ["a", "c", "d"] {
            store.delete_vm(&store.vm(gone).unwrap().id).unwrap();
        }
        assert_eq!(
            insert_all(&store, &["f", "g", "h"], &subnet()),
            ["10.1.0.2", "10.1.0.4", "10.1.0.5"]
        );
        let err = store
            .insert_vm(
                &new_vm(Some("i")),
                &id(0x69),
                &subnet(),
                &|_| unreachable!(),
            )
            .unwrap_err();
        assert!(matches!(err, StateError::SubnetFull(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "subnet 10.1.0.0/29 has no free guest address left"
        );
        // CIDs were not at their top: each VM got a fresh one.
        let cids: Vec<u32> = store
            .list_vms()
            .unwrap()
            .iter()
            .map(|v| v.vsock_cid)
            .collect();
        assert_eq!(cids, [4, 7, 8, 9, 10]);
    }

    #[test]
    fn cids_wrap_to_the_lowest_free_one_after_the_highest() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        insert_all(&store, &["a", "b", "c"], &subnet());
        store.delete_vm(&store.vm("b").unwrap().id).unwrap();
        // The highest guest CID is taken (by a hand edit: 4 billion VMs
        // are a lot), so the lowest free ones are next: 4, then c's 5.
        store
            .conn
            .execute(
                "UPDATE vms SET vsock_cid = ?1 WHERE name = 'c'",
                [u32::MAX - 1],
            )
            .unwrap();
        insert_all(&store, &["d", "e"], &subnet());
        assert_eq!(store.vm("d").unwrap().vsock_cid, 4);
        assert_eq!(store.vm("e").unwrap().vsock_cid, 5);
        assert_eq!(store.vm("c").unwrap().vsock_cid, u32::MAX - 1);
    }

    #[test]
    fn rows_outside_a_changed_subnet_do_not_steer_allocation() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        let old = Subnet::parse("10.1.0.0/28").unwrap();
        insert_all(&store, &["a", "b", "c", "d", "e", "f"], &old);
        // Above the highest address of the new range, below it, and beside it.
        let above = Subnet::parse("10.1.0.8/29").unwrap();
        assert_eq!(
            insert_all(&store, &["g", "h"], &above),
            ["10.1.0.10", "10.1.0.11"]
        );
        let beside = Subnet::parse("10.2.0.0/29").unwrap();
        assert_eq!(insert_all(&store, &["i"], &beside), ["10.2.0.2"]);
        // Inside the first /29, whose top (.6) the old rows hold: the lowest
        // free address, once some are.
        store.delete_vm(&store.vm("b").unwrap().id).unwrap();
        assert_eq!(insert_all(&store, &["j"], &subnet()), ["10.1.0.3"]);
        assert!(matches!(
            store.insert_vm(
                &new_vm(Some("k")),
                &id(0x6b),
                &subnet(),
                &|_| unreachable!()
            ),
            Err(StateError::SubnetFull(_))
        ));
    }

    #[test]
    fn a_row_whose_address_was_edited_by_hand_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        insert_all(&store, &["a"], &subnet());
        // A hand edit moves `a` to the next address, leaving its number.
        store
            .conn
            .execute(
                "UPDATE vms SET ip = '10.1.0.3', mac = '06:00:0a:01:00:03' WHERE name = 'a'",
                [],
            )
            .unwrap();
        assert_eq!(
            insert_all(&store, &["b", "c"], &subnet()),
            ["10.1.0.4", "10.1.0.5"]
        );
        assert_eq!(store.vm("a").unwrap().ip.to_string(), "10.1.0.3");
    }

    #[test]
    fn allocation_reads_indexes_not_every_row() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        for column in ["ip_num", "vsock_cid"] {
            for sql in free_value_queries(column) {
                let mut stmt = store
                    .conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .unwrap();
                let values = [1, 2];
                let values = &values[..stmt.parameter_count()];
                let plan: Vec<String> = stmt
                    .query_map(rusqlite::params_from_iter(values), |r| r.get(3))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                // Every step an index search: no scan of the table, no sort.
                assert!(
                    plan.iter()
                        .all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
                    "{sql}: {plan:?}"
                );
                assert!(
                    plan.iter()
                        .any(|step| step.starts_with("SEARCH") && step.contains("INDEX")),
                    "{sql}: {plan:?}"
                );
            }
        }
    }

    #[test]
    fn guest_range_is_the_first_and_last_guest_address() {
        for text in ["10.1.0.0/29", "172.30.0.0/24", "10.200.0.0/16"] {
            let subnet = Subnet::parse(text).unwrap();
            let all: Vec<u32> = subnet.guest_addresses().map(u32::from).collect();
            assert_eq!(guest_range(&subnet), (all[0], all[all.len() - 1]), "{text}");
        }
    }

    #[test]
    fn refuses_taken_names_and_full_subnets() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        store
            .insert_vm(&new_vm(Some("a")), &id(1), &subnet(), &|_| unreachable!())
            .unwrap();
        let err = store
            .insert_vm(&new_vm(Some("a")), &id(2), &subnet(), &|_| unreachable!())
            .unwrap_err();
        assert!(matches!(err, StateError::NameTaken(_)));
        for i in 0..4 {
            store
                .insert_vm(&new_vm(None), &id(0x100 + i), &subnet(), &|n| {
                    name(&format!("n{i}-{n}"))
                })
                .unwrap();
        }
        let err = store
            .insert_vm(&new_vm(None), &id(0xf), &subnet(), &|n| {
                name(&format!("f{n}"))
            })
            .unwrap_err();
        assert!(err.to_string().contains("no free guest address"), "{err}");
    }

    #[test]
    fn generated_names_skip_taken_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        store
            .insert_vm(
                &new_vm(Some("gen-0")),
                &id(1),
                &subnet(),
                &|_| unreachable!(),
            )
            .unwrap();
        let vm = store
            .insert_vm(&new_vm(None), &id(2), &subnet(), &|n| {
                name(&format!("gen-{n}"))
            })
            .unwrap();
        assert_eq!(vm.name.as_str(), "gen-1");
    }

    #[test]
    fn first_image_is_default_and_default_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        let image = |name: &str| Image {
            name: name.into(),
            source: "import".into(),
            has_initrd: false,
            is_default: false,
            created_at: 0,
            committed_from: None,
        };
        store.insert_image(&image("a")).unwrap();
        store.insert_image(&image("b")).unwrap();
        assert_eq!(store.default_image().unwrap().unwrap().name, "a");
        store.set_default_image("b").unwrap();
        assert_eq!(store.default_image().unwrap().unwrap().name, "b");
        assert!(matches!(
            store.insert_image(&image("a")),
            Err(StateError::ImageExists(_))
        ));
        assert!(matches!(
            store.set_default_image("zzz"),
            Err(StateError::NoSuchImage(_))
        ));
    }

    #[test]
    fn reopening_keeps_rows_and_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        Store::open(&path)
            .unwrap()
            .insert_vm(
                &new_vm(Some("keep")),
                &id(0x6b),
                &subnet(),
                &|_| unreachable!(),
            )
            .unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.vm("keep").unwrap().id, id(0x6b));
        assert_eq!(store.integrity_check().unwrap(), "ok");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn schema_one_intents_become_pending_operations() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let insert = |n: u32, desired: &str, last_error: Option<&str>, creating: bool| {
                conn.execute(
                    "INSERT INTO vms (id, name, image, vcpus, memory_mib, disk_size, work_size,
                                      ip, mac, cid, nat, cow_strategy, desired, last_error,
                                      creating, created_at)
                     VALUES (?1, ?2, 'base', 1, 128, 1, 1, ?3, ?4, ?5, 1, 'copy', ?6, ?7, ?8, 0)",
                    params![
                        id(n),
                        format!("vm{n}"),
                        format!("10.0.0.{n}"),
                        format!("06:00:0a:00:00:{n:02x}"),
                        n + 2,
                        desired,
                        last_error,
                        creating
                    ],
                )
                .unwrap();
            };
            insert(1, "running", None, false);
            insert(2, "running", Some("its start was interrupted; ..."), false);
            insert(
                3,
                "stopped",
                Some("stopping VM vm3 did not finish; ..."),
                false,
            );
            insert(
                4,
                "stopped",
                Some("deletion did not finish; run ..."),
                false,
            );
            insert(5, "running", Some("its start was interrupted; ..."), true);
            insert(
                6,
                "stopped",
                Some("the VMM refused the configuration"),
                false,
            );
        }
        let store = Store::open(&path).unwrap();
        let got: Vec<_> = store
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|vm| (vm.name.to_string(), vm.pending, vm.last_error))
            .collect();
        assert_eq!(
            got,
            [
                ("vm1".to_owned(), None, None),
                ("vm2".to_owned(), Some(Pending::Start), None),
                ("vm3".to_owned(), Some(Pending::Stop), None),
                ("vm4".to_owned(), Some(Pending::Delete), None),
                (
                    "vm5".to_owned(),
                    Some(Pending::Create),
                    Some("its start was interrupted; ...".to_owned())
                ),
                (
                    "vm6".to_owned(),
                    None,
                    Some("the VMM refused the configuration".to_owned())
                ),
            ]
        );
        assert_eq!(
            store.vm("vm1").unwrap().cow_strategy,
            Some(CowStrategy::Copy)
        );
    }

    #[test]
    fn a_host_port_published_by_another_vm_is_refused_in_the_insert() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        let port = |s: &str| PublishedPort::parse(s).unwrap();
        let with = |vm_name: &str, specs: &[&str]| NewVm {
            published: specs.iter().map(|s| port(s)).collect(),
            ..new_vm(Some(vm_name))
        };
        let a = store
            .insert_vm(
                &with("a", &["2222:22"]),
                &id(1),
                &subnet(),
                &|_| unreachable!(),
            )
            .unwrap();
        assert_eq!(store.vm("a").unwrap().published, a.published);
        let err = store
            .insert_vm(
                &with("b", &["8080:80", "0.0.0.0:2222:22"]),
                &id(2),
                &subnet(),
                &|_| unreachable!(),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host port 0.0.0.0:2222/tcp is already published by VM a"
        );
        assert!(store.find_vm("b").unwrap().is_none());
        // Another protocol, or another address, is another socket.
        store
            .insert_vm(
                &with("c", &["2222:22/udp", "10.9.9.9:2222:22"]),
                &id(3),
                &subnet(),
                &|_| unreachable!(),
            )
            .unwrap();
    }

    #[test]
    fn schema_four_rows_keep_their_addresses_and_are_allocated_around() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        {
            let conn = database_at_schema(&path, 4);
            for (n, ip) in [
                (1u32, "10.1.0.2"),
                (2, "10.1.0.4"),
                (3, "10.1.0.02"),
                (4, ""),
            ] {
                let mac = ip
                    .parse::<Ipv4Addr>()
                    .map(mac_for)
                    .unwrap_or_else(|_| format!("bad-{n}"));
                conn.execute(
                    "INSERT INTO vms (id, name, image, vcpus, memory_mib, disk_size, work_size,
                                      ip, mac, vsock_cid, nat, desired, created_at)
                     VALUES (?1, ?2, 'base', 1, 128, 1, 1, ?3, ?4, ?5, 1, 'stopped', ?1)",
                    params![id(n), format!("old{n}"), ip, mac, 10 + n],
                )
                .unwrap();
            }
        }
        let store = Store::open(&path).unwrap().with_subnet(subnet());
        let kept: Vec<_> = store
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|vm| (vm.name.to_string(), vm.ip.to_string()))
            .collect();
        assert_eq!(
            kept,
            [
                ("old1".to_owned(), "10.1.0.2".to_owned()),
                ("old2".to_owned(), "10.1.0.4".to_owned())
            ]
        );
        // The rows whose address is no address are still there, reported.
        let bad: Vec<_> = store
            .bad_vms()
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(bad, ["old3", "old4"]);
        let numbers: Vec<Option<u32>> = store
            .conn
            .prepare("SELECT ip_num FROM vms ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(numbers, [Some(0x0a01_0002), Some(0x0a01_0004), None, None]);
        // One past the highest address and CID taken.
        let vm = store
            .insert_vm(&new_vm(Some("new")), &id(9), &subnet(), &|_| unreachable!())
            .unwrap();
        assert_eq!(
            (vm.ip.to_string(), vm.vsock_cid),
            ("10.1.0.5".to_owned(), 15)
        );
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.vm("new").unwrap().ip.to_string(), "10.1.0.5");
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn schema_two_rows_publish_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO vms (id, name, image, vcpus, memory_mib, disk_size, work_size,
                                  ip, mac, vsock_cid, nat, desired, created_at)
                 VALUES (?1, 'old', 'base', 1, 128, 1, 1, '10.0.0.2', '06:00:0a:00:00:02', 3,
                         1, 'stopped', 0)",
                [id(1)],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(store.vm("old").unwrap().published.is_empty());
        let vm = store
            .insert_vm(
                &NewVm {
                    published: vec![PublishedPort::parse("8080:80").unwrap()],
                    ..new_vm(Some("new"))
                },
                &id(2),
                &subnet(),
                &|_| unreachable!(),
            )
            .unwrap();
        assert_eq!(store.vm("new").unwrap().published, vm.published);
    }

    fn pool(image: &str, size: u32) -> Pool {
        Pool {
            image: image.into(),
            size,
            spec: PoolSpec {
                vcpus: 2,
                memory_mib: 512,
                disk_size: None,
                work_size: 1 << 30,
                nat: true,
            },
            max_age: 3600,
            created_at: now(),
        }
    }

    fn claim(name: Option<&str>) -> Claim {
        Claim {
            name: name.map(self::name),
            expires_at: Some(123),
            vmm_choice: None,
        }
    }

    #[test]
    fn pool_vms_join_their_pool_and_a_claim_takes_one_out_renamed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        let member = NewVm {
            pool: Some("base".into()),
            ..new_vm(Some("pool-1"))
        };
        let err = store
            .insert_vm(&member, &id(1), &subnet(), &|_| unreachable!())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "image base has no warm pool (see `banger pool ls`)"
        );
        assert!(store.list_vms().unwrap().is_empty());
        store.set_pool(&pool("base", 1)).unwrap();
        assert_eq!(store.pools().unwrap(), vec![pool_without_time(&store)]);
        store
            .insert_vm(&member, &id(1), &subnet(), &|_| unreachable!())
            .unwrap();
        let members = store.pool_members().unwrap();
        assert_eq!(
            members.get(&id(1)),
            Some(&PoolMember {
                image: "base".into(),
                ready: false
            })
        );
        // Not ready yet: nothing to claim.
        assert!(
            store
                .claim_pool_vm(&id(1), &claim(Some("mine")), &|_| unreachable!())
                .unwrap()
                .is_none()
        );
        assert!(store.mark_pool_ready(&id(1)).unwrap());
        store
            .insert_vm(
                &new_vm(Some("taken")),
                &id(2),
                &subnet(),
                &|_| unreachable!(),
            )
            .unwrap();
        let err = store
            .claim_pool_vm(&id(1), &claim(Some("taken")), &|_| unreachable!())
            .unwrap_err();
        assert!(matches!(err, StateError::NameTaken(_)), "{err}");
        assert!(store.pool_members().unwrap()[&id(1)].ready, "still pooled");
        let vm = store
            .claim_pool_vm(&id(1), &claim(Some("mine")), &|_| unreachable!())
            .unwrap()
            .unwrap();
        assert_eq!(vm.name.as_str(), "mine");
        assert_eq!(vm.pending, Some(Pending::Claim));
        assert_eq!(vm.expires_at, Some(123));
        assert!(store.pool_members().unwrap().is_empty());
        assert!(
            store
                .claim_pool_vm(&id(1), &claim(None), &|_| unreachable!())
                .unwrap()
                .is_none(),
            "claimed twice"
        );
        store.finish_claim(&id(1)).unwrap();
        assert_eq!(store.vm("mine").unwrap().pending, None);
        assert!(store.delete_pool("base").unwrap());
        assert!(!store.delete_pool("base").unwrap());
    }

    fn pool_without_time(store: &Store) -> Pool {
        let stored = store.find_pool("base").unwrap().unwrap();
        Pool {
            created_at: stored.created_at,
            ..pool("base", 1)
        }
    }

    #[test]
    fn deleting_a_pool_vm_removes_its_membership() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db")).unwrap();
        store.set_pool(&pool("base", 1)).unwrap();
        let member = NewVm {
            pool: Some("base".into()),
            ..new_vm(Some("pool-1"))
        };
        store
            .insert_vm(&member, &id(1), &subnet(), &|_| unreachable!())
            .unwrap();
        store.delete_vm(&id(1)).unwrap();
        assert!(store.pool_members().unwrap().is_empty());
        assert!(!store.mark_pool_ready(&id(1)).unwrap());
    }

    #[test]
    fn sixteen_concurrent_claims_never_take_one_vm_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        let store = Store::open(&path).unwrap();
        store.set_pool(&pool("base", 4)).unwrap();
        let subnet = Subnet::parse("10.1.0.0/24").unwrap();
        for n in 1..=4 {
            let member = NewVm {
                pool: Some("base".into()),
                ..new_vm(Some(&format!("pool-{n}")))
            };
            store
                .insert_vm(&member, &id(n), &subnet, &|_| unreachable!())
                .unwrap();
            store.mark_pool_ready(&id(n)).unwrap();
        }
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let store = Store::open(&path).unwrap();
                    barrier.wait();
                    // Each claimer tries every member, as `vm run` does.
                    (1..=4).find_map(|n| {
                        let name = format!("run-{t}");
                        store
                            .claim_pool_vm(&id(n), &claim(Some(&name)), &|_| unreachable!())
                            .unwrap()
                            .map(|vm| (vm.id, vm.name))
                    })
                })
            })
            .collect();
        let claimed: Vec<_> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(claimed.len(), 4, "{claimed:?}");
        let ids: std::collections::HashSet<_> = claimed.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 4, "a VM was claimed twice: {claimed:?}");
        for (id, name) in &claimed {
            assert_eq!(&store.vm_by_id(id).unwrap().unwrap().name, name);
        }
        assert!(store.pool_members().unwrap().is_empty());
    }

    #[test]
    fn images_from_before_provenance_read_as_before() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        {
            let conn = database_at_schema(&path, 4);
            conn.execute(
                "INSERT INTO images (name, source, has_initrd, is_default, created_at)
                 VALUES ('old', 'build', 1, 1, 7), ('odd', 'mkosi', 0, 0, 8)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let old = store.image("old").unwrap();
        assert_eq!((old.source.as_str(), old.committed_from), ("build", None));
        assert_eq!(store.image("old").unwrap().origin(), "built");
        assert_eq!(store.image("odd").unwrap().origin(), "mkosi");
        let from = crate::state::model::CommittedFrom {
            vm: "a".into(),
            vm_id: "0123456789".into(),
            image: "old".into(),
        };
        store
            .insert_image(&Image {
                name: "new".into(),
                source: "commit".into(),
                has_initrd: true,
                is_default: false,
                created_at: 9,
                committed_from: Some(from.clone()),
            })
            .unwrap();
        let new = store.image("new").unwrap();
        assert_eq!(new.committed_from, Some(from));
        assert_eq!(new.origin(), "committed from VM a of image old");
    }
}
