//! The `store_open` target: the store opening a damaged database file (input:
//! the bytes of `duet.db`), then every read the store offers.

use duet_sync::proto::session::Session;
use duet_sync::proto::verify;

use super::fixtures::{FOUNDER, KNOWN, SPACE_ID, device, read_everything};

/// The store opening a damaged database file.
///
/// Input: the bytes of `duet.db`, written into a fresh temporary directory.
/// Then `Store::open` and every read the store offers, the document's through
/// every model read. Checks: no panic (errors are fine).
pub fn store_open(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(dir.path().join(duet_store::DB_FILE), data).is_err() {
        return;
    }
    let mut store = match duet_store::Store::open(dir.path()) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = store.read(read_everything);
    let _ = store.read(|doc| doc.get_heads());
    let _ = store.device_id();
    let _ = store.device_name();
    let _ = store.meta_get("space_id");
    let _ = store.meta_get("seat");
    let _ = store.data_version();
    let _ = store
        .log(Some(20))
        .map(|l| l.iter().map(|e| format!("{e:?}")).count());
    let _ = store.stats();
    if let Ok(atts) = store.attestations() {
        let _ = verify::check_signatures(&atts);
    }
    let _ = store.peers();
    let _ = store.journal();
    let _ = store.private_get("review");
    for n in KNOWN {
        if let Ok(Some(state)) = store.sync_state(&device(n)) {
            // What a driver does with a saved state.
            let _ = Session::new(device(n), SPACE_ID, device(FOUNDER), Some(&state), 0);
        }
    }
}
