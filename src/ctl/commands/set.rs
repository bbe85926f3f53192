//! `set NAME Prop=Value...`: one Configure call, so the daemon stores all or none. On a VM
//! that runs, the settings QEMU only reads at start are named, so nobody waits for them.

use crate::contract::{call_args, properties, setting, Applies, Use};
use crate::error::{Error, Result};

pub async fn run(conn: &zbus::Connection, name: &str, given: &[String]) -> Result<()> {
    let settings = given
        .iter()
        .map(|g| setting(g, Use::Configure))
        .collect::<Result<Vec<_>>>()?;
    let vm = super::find(conn, name).await?;
    vm.configure(call_args(settings.iter().map(|(k, v)| (k, v))))
        .await
        .map_err(Error::call(format!("configure {name}")))?;
    let state = vm
        .state()
        .await
        .map_err(Error::call(format!("read the state of {name}")))?;
    let later = next_start(settings.iter().map(|(k, _)| k.as_str()));
    if state != "stopped" && !later.is_empty() {
        eprintln!(
            "{name} is {state}: {} will apply at its next start.",
            later.join(", ")
        );
    }
    Ok(())
}

/// Which of `names` a running QEMU only gets at its next start.
pub(super) fn next_start<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    names
        .filter(|n| properties().get(*n).map(|p| p.applies) == Some(Applies::NextStart))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_settings_read_at_start_are_named() {
        let names = ["Ram", "CpuThrottling", "Options", "Adapters"];
        assert_eq!(super::next_start(names.into_iter()), ["Ram", "Options"]);
    }
}
