//! A profile read back from the state store: parsed, turned back into the
//! snapshot job a restarted daemon serves, and shown again as the API does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::profile::{JobJson, restore_stored};

fuzz_target!(|data: &[u8]| {
    // The store's json column is TEXT: what the daemon reads back is UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for job in restore_stored(&[text.to_string()]) {
        let shown = JobJson::from(&job);
        assert!(serde_json::to_string(&shown).is_ok());
    }
});
