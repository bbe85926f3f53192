//! VMs defined beside a test's own, as a host with a big lab has them: the crash and load
//! tests run with a thousand of these, which every check of theirs covers and no operation of
//! theirs targets. They have no console port, so that they fit a test's port slot.

use super::ManagerProxy;
use std::collections::HashMap;
use std::time::Instant;
use zbus::Variant;

/// How many: `BYSTANDERS=<n>` in the environment, else 1 000.
pub fn count() -> usize {
    std::env::var("BYSTANDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

pub const PREFIX: &str = "bystander-";

pub fn is_one(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Defines `n` stopped VMs named `bystander-<i>`.
pub async fn define(m: &ManagerProxy<'_>, n: usize) {
    let t = Instant::now();
    for i in 0..n {
        let settings = HashMap::from([
            ("Ram", Variant::from(32u32)),
            ("ConsolePort", Variant::from(0u16)),
        ]);
        m.create_vm(&format!("{PREFIX}{i}"), settings)
            .await
            .unwrap_or_else(|e| panic!("CreateVM {PREFIX}{i}: {e}"));
    }
    println!("{n} VMs defined beside the test's in {:.1?}", t.elapsed());
}
