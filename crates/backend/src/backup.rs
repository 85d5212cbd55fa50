//! Backups in etcd's backend format: the state machine as a bbolt file with etcd's
//! buckets, which `etcdctl snapshot status/restore` and `etcdutl` read, and the
//! reverse, an etcd backend (or a Cairn backup) read into a Cairn state machine.
//!
//! Buckets: `key` (every change, from `cairn-mvcc`), `meta` (`consistent_index`, the
//! compaction revisions), `lease` (ID to `leasepb.Lease`), `auth`, `authUsers`,
//! `authRoles` (from `cairn-auth`), `alarm` (marshalled `AlarmMember`), `cluster`
//! (`clusterVersion`), `members` and `members_removed` (ID in hex to etcd's member
//! JSON). A restore keeps keys, revisions, leases, auth and alarms; the membership
//! comes from the new cluster's flags, as with etcd.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};

use cairn_api::etcdserverpb::{AlarmMember, Member};
use cairn_auth::EtcdAuthBuckets;
use cairn_mvcc::backend::{self as etcd, META_BUCKET};
use cairn_mvcc::bbolt::{BoltError, BoltReader, BoltWriter};
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use cairn_mvcc::Revisions;
use sha2::{Digest, Sha256};

use crate::{ALARMS, AUTH, Error, KV, LEASES, MEMBERS, META};

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, Message)]
struct LeasePb {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

fn put_all<F: Write + Seek>(
    writer: &mut BoltWriter<F>,
    name: &str,
    mut entries: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), BoltError> {
    entries.sort();
    let mut bucket = writer.bucket(name.as_bytes());
    for (key, value) in &entries {
        bucket.put(key, value)?;
    }
    bucket.finish()
}

/// etcd's JSON for a member (`membership.Member`): ID, peer URLs, then the learner
/// flag, name and client URLs when set.
fn member_json(member: &Member) -> Vec<u8> {
    let mut json = serde_json::Map::new();
    json.insert("id".into(), member.id.into());
    json.insert("peerURLs".into(), member.peer_ur_ls.clone().into());
    if member.is_learner {
        json.insert("isLearner".into(), true.into());
    }
    if !member.name.is_empty() {
        json.insert("name".into(), member.name.clone().into());
    }
    if !member.client_ur_ls.is_empty() {
        json.insert("clientURLs".into(), member.client_ur_ls.clone().into());
    }
    serde_json::Value::Object(json).to_string().into_bytes()
}

/// etcd's hashes of a backend (`snapshot status`, `Maintenance.Hash`): CRC-32C over
/// every bucket's name and its keys and values, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendHash {
    /// CRC-32C over every bucket's name, keys and values.
    pub hash: u32,
    /// The main revision of the last key in the `key` bucket.
    pub revision: i64,
    /// Key/value pairs in all buckets.
    pub total_keys: u64,
}

/// Hashes the backend `reader` reads. `Maintenance.Hash` leaves out `meta`'s
/// `consistent_index` and `term` (`skip_index`), which differ between members;
/// `snapshot status` hashes everything.
pub fn hash(reader: &BoltReader, skip_index: bool) -> Result<BackendHash, Error> {
    let mut hashed = BackendHash { hash: 0, revision: 0, total_keys: 0 };
    for bucket in reader.buckets()? {
        hashed.hash = crc32c::crc32c_append(hashed.hash, &bucket);
        let is_key = bucket == etcd::KEY_BUCKET;
        let is_meta = bucket == META_BUCKET;
        reader.for_each(&bucket, |key, value| {
            if skip_index && is_meta && (key == b"consistent_index" || key == b"term") {
                return Ok(());
            }
            hashed.hash = crc32c::crc32c_append(hashed.hash, key);
            hashed.hash = crc32c::crc32c_append(hashed.hash, value);
            if is_key && key.len() >= 8 {
                hashed.revision = i64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
            }
            hashed.total_keys += 1;
            Ok::<_, Error>(())
        })?;
    }
    Ok(hashed)
}

/// etcd's `Maintenance.Hash` of the state machine: the backend written to a temporary
/// file beside the database and hashed without the applied index. Also the store
/// revision it was taken at.
pub fn backend_hash(
    db: &redb::Database,
    dir: &std::path::Path,
    cluster_version: &str,
) -> Result<(u32, u64), Error> {
    let io = |error: std::io::Error| Error::Redb(format!("hash: {error}"));
    let file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let copy = file.reopen().map_err(io)?;
    let (_, _, revision) = write(db, copy, cluster_version)?;
    let reader = BoltReader::open(file.path())?;
    Ok((hash(&reader, true)?.hash, revision))
}

/// What `Maintenance.Snapshot` streams: the backup [`write()`] makes, in a temporary
/// file in `dir` (memory stays bounded whatever the size), handed to `send` in
/// `chunk`-byte blobs with the bytes still to come after each, then one last blob
/// with the file's SHA-256 (remaining 0), as etcd streams it. Stops early, without
/// an error, when `send` says the receiver has gone.
pub fn stream(
    db: &redb::Database,
    dir: &std::path::Path,
    cluster_version: &str,
    chunk: usize,
    mut send: impl FnMut(Vec<u8>, u64) -> bool,
) -> Result<(), Error> {
    use std::io::Read as _;
    let file = tempfile::tempfile_in(dir).map_err(crate::io_error("cannot create a snapshot file"))?;
    let (mut file, total, _) = write(db, file, cluster_version)?;
    file.rewind().map_err(crate::io_error("cannot read the snapshot file"))?;
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    let mut buffer = vec![0u8; chunk.max(1)];
    while sent < total {
        let n = (total - sent).min(buffer.len() as u64) as usize;
        file.read_exact(&mut buffer[..n]).map_err(crate::io_error("cannot read the snapshot file"))?;
        hasher.update(&buffer[..n]);
        sent += n as u64;
        if !send(buffer[..n].to_vec(), total - sent) {
            return Ok(());
        }
    }
    send(hasher.finalize().to_vec(), 0);
    Ok(())
}

/// Writes the state machine, as one read transaction of `db` sees it, to `file` as
/// an etcd backend whose `cluster` bucket says `cluster_version`, giving back the file
/// (flushed, not synced), its size and the store revision.
pub fn write(db: &redb::Database, file: File, cluster_version: &str) -> Result<(File, u64, u64), Error> {
    let txn = db.begin_read()?;
    let mut writer = BoltWriter::new(BufWriter::with_capacity(1 << 20, file))?;

    let mut alarms = Vec::new();
    for entry in txn.open_table(ALARMS)?.iter()? {
        let (member_id, alarm) = entry?.0.value();
        alarms.push((AlarmMember { member_id, alarm }.encode_to_vec(), Vec::new()));
    }
    put_all(&mut writer, "alarm", alarms)?;

    let auth = match txn.open_table(AUTH)?.get("store")? {
        Some(bytes) => bytes.value().to_vec(),
        None => cairn_auth::AuthStore::new().snapshot(),
    };
    let auth = EtcdAuthBuckets::from_snapshot(&auth).map_err(|_| Error::Corrupt("auth store"))?;
    put_all(
        &mut writer,
        "auth",
        vec![
            (b"authEnabled".to_vec(), vec![u8::from(auth.enabled)]),
            (b"authRevision".to_vec(), auth.revision.to_be_bytes().to_vec()),
        ],
    )?;
    put_all(&mut writer, "authUsers", auth.users)?;
    put_all(&mut writer, "authRoles", auth.roles)?;
    put_all(&mut writer, "cluster", vec![(b"clusterVersion".to_vec(), cluster_version.as_bytes().to_vec())])?;

    etcd::write_key_bucket(&mut writer, &txn.open_table(KV)?)?;

    let mut leases = Vec::new();
    for entry in txn.open_table(LEASES)?.iter()? {
        let (id, ttls) = entry?;
        let (ttl, remaining) = ttls.value();
        // etcd keeps a remainder only once a checkpoint set one.
        let remaining_ttl = if remaining < ttl { remaining } else { 0 };
        let lease = LeasePb { id: id.value(), ttl, remaining_ttl };
        leases.push((id.value().to_be_bytes().to_vec(), lease.encode_to_vec()));
    }
    put_all(&mut writer, "lease", leases)?;

    let (mut members, mut removed) = (Vec::new(), Vec::new());
    for entry in txn.open_table(MEMBERS)?.iter()? {
        let (id, bytes) = entry?;
        let member = Member::decode(bytes.value()).map_err(|_| Error::Corrupt("member"))?;
        let key = format!("{:x}", id.value()).into_bytes();
        if member.name == crate::members::REMOVED {
            removed.push((key, b"removed".to_vec()));
        } else {
            members.push((key, member_json(&member)));
        }
    }
    put_all(&mut writer, "members", members)?;
    put_all(&mut writer, "members_removed", removed)?;

    let meta_table = txn.open_table(META)?;
    let revisions = Revisions::load(&meta_table)?;
    let applied = meta_table.get("applied_index")?.map_or(0, |v| v.value());
    let mut meta = vec![(b"consistent_index".to_vec(), applied.to_be_bytes().to_vec())];
    if revisions.compacted > 0 {
        let compacted = etcd::compact_revision_value(revisions.compacted);
        meta.push((etcd::SCHEDULED_COMPACT.to_vec(), compacted.clone()));
        meta.push((etcd::FINISHED_COMPACT.to_vec(), compacted));
    }
    put_all(&mut writer, std::str::from_utf8(META_BUCKET).unwrap_or("meta"), meta)?;

    let mut file = writer.finish()?.into_inner().map_err(|error| Error::Redb(error.to_string()))?;
    let size = file.stream_position().map_err(|error| Error::Redb(error.to_string()))?;
    Ok((file, size, revisions.current))
}

/// What a restore read from a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The store's revisions.
    pub revisions: Revisions,
    /// How many changes of keys it holds.
    pub changes: u64,
    /// How many leases.
    pub leases: u64,
}

/// Replaces the keys, leases, auth store and alarms in `txn` with the backup read by
/// `reader`; the membership and the applied index are the caller's.
pub fn restore(reader: &BoltReader, txn: &WriteTransaction) -> Result<Restored, Error> {
    let mut kv = txn.open_table(KV)?;
    kv.retain(|_, _| false)?;
    let highest = etcd::read_key_bucket(reader, &mut kv)?;
    let changes = kv.len()?;
    let compacted = etcd::read_compact_revision(reader)?;
    let revisions = Revisions { current: highest.max(compacted).max(1), compacted };
    revisions.save(&mut txn.open_table(META)?)?;

    let mut leases = txn.open_table(LEASES)?;
    leases.retain(|_, _| false)?;
    reader.for_each(b"lease", |_, value| {
        let lease =
            LeasePb::decode(value).map_err(|_| Error::Corrupt("leasepb.Lease in the lease bucket"))?;
        let remaining = if lease.remaining_ttl > 0 { lease.remaining_ttl } else { lease.ttl };
        leases.insert(lease.id, (lease.ttl, remaining))?;
        Ok::<_, Error>(())
    })?;
    let lease_count = leases.len()?;

    let mut auth = EtcdAuthBuckets { revision: 1, ..EtcdAuthBuckets::default() };
    reader.for_each(b"auth", |key, value| {
        match key {
            b"authEnabled" => auth.enabled = value == [1],
            b"authRevision" => {
                let bytes = value.try_into().map_err(|_| Error::Corrupt("authRevision"))?;
                auth.revision = u64::from_be_bytes(bytes);
            }
            _ => {}
        }
        Ok::<_, Error>(())
    })?;
    for (bucket, entries) in [(b"authUsers".as_slice(), &mut auth.users), (b"authRoles", &mut auth.roles)] {
        reader.for_each(bucket, |key, value| {
            entries.push((key.to_vec(), value.to_vec()));
            Ok::<_, Error>(())
        })?;
    }
    let auth = auth.to_snapshot().map_err(|_| Error::Corrupt("auth buckets"))?;
    let mut table = txn.open_table(AUTH)?;
    table.retain(|_, _| false)?;
    table.insert("store", auth.as_slice())?;

    let mut alarms = txn.open_table(ALARMS)?;
    alarms.retain(|_, _| false)?;
    reader.for_each(b"alarm", |key, _| {
        let alarm =
            AlarmMember::decode(key).map_err(|_| Error::Corrupt("AlarmMember in the alarm bucket"))?;
        alarms.insert((alarm.member_id, alarm.alarm), ())?;
        Ok::<_, Error>(())
    })?;
    Ok(Restored { revisions, changes, leases: lease_count })
}

/// What `snapshot status` reports of the backup at `path`, as etcd computes it: its
/// hashes and its size. A file that fails bbolt's integrity check is refused with
/// etcd's text.
pub fn status(path: &std::path::Path) -> Result<(BackendHash, u64), Error> {
    let reader = BoltReader::open(path)?;
    let errors = reader.check()?;
    if !errors.is_empty() {
        return Err(Error::Backend(format!(
            "snapshot file integrity check failed. {} errors found.\n{}",
            errors.len(),
            errors.join("\n")
        )));
    }
    Ok((hash(&reader, false)?, reader.size()))
}

/// Checks a saved snapshot's SHA-256 trailer, by etcd's rule: a file 32 bytes past a
/// multiple of 512 has one. A file without one, or with a wrong one, passes only with
/// `skip_hash_check`, as etcd's restore; the errors are etcd's texts.
pub fn verify_hash(file: &std::path::Path, skip_hash_check: bool) -> Result<(), Error> {
    use std::io::Read as _;
    let io = |error: std::io::Error| Error::Backend(format!("cannot read {}: {error}", file.display()));
    let mut input = File::open(file).map_err(io)?;
    let size = input.metadata().map_err(io)?.len();
    if size % 512 != 32 {
        if skip_hash_check {
            return Ok(());
        }
        return Err(Error::Backend("snapshot missing hash but --skip-hash-check=false".into()));
    }
    let mut hasher = Sha256::new();
    let mut remaining = size - 32;
    let mut buffer = vec![0u8; 1 << 20];
    while remaining > 0 {
        let n = remaining.min(buffer.len() as u64) as usize;
        input.read_exact(&mut buffer[..n]).map_err(io)?;
        hasher.update(&buffer[..n]);
        remaining -= n as u64;
    }
    let mut expected = [0u8; 32];
    input.read_exact(&mut expected).map_err(io)?;
    let got = hasher.finalize();
    if !skip_hash_check && got[..] != expected {
        // Go's %v of a byte slice, as etcd words it.
        let go = |bytes: &[u8]| format!("{bytes:?}").replace(',', "");
        return Err(Error::Backend(format!("expected sha256 {}, got {}", go(&expected), go(&got))));
    }
    Ok(())
}
