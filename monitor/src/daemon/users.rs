//! uid -> user name, cached (NSS lookups can be slow on LDAP sites).
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct UserNames(HashMap<u32, String>);

impl UserNames {
    pub fn name(&mut self, uid: u32) -> &str {
        self.0.entry(uid).or_insert_with(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|user| user.name)
                .unwrap_or_else(|| uid.to_string())
        })
    }
}
