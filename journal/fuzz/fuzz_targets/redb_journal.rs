//! Opens a redb journal on arbitrary file contents: raw bytes, and a
//! journal the engine wrote with bytes flipped and its end cut off. See
//! `common` for the properties checked, beyond "never panics, never
//! allocates past the limits".
#![no_main]

mod common;

use common::{Open, check, edited, mark, written};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use trexlock_journal::RedbJournal;

const NAME: &str = "journal.redb";

fn open_redb(
    path: &std::path::Path,
    identity: trexlock_journal::JournalIdentity,
) -> common::OpenResult {
    Ok(Box::new(RedbJournal::open(path, identity)?))
}

fuzz_target!(|data: &[u8]| {
    static WRITTEN: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let open: Open = open_redb;
    let [shape, selector, body @ ..] = data else {
        return;
    };
    let (custom_mark, body) = mark(*selector, body);
    if shape % 2 == 0 {
        check(open, NAME, body, custom_mark, false);
    } else {
        let (file, real_mark) = WRITTEN.get_or_init(|| written(open, NAME));
        let mark = custom_mark.or((selector % 2 == 0).then_some(real_mark.as_slice()));
        check(open, NAME, &edited(file, body), mark, false);
    }
});
