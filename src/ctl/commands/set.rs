//! `set NAME Prop=Value...`: one Configure call, so the daemon stores all or none.

use std::collections::HashMap;
use zbus::Variant;

use crate::contract::{setting, Use};
use crate::error::{Error, Result};

pub async fn run(conn: &zbus::Connection, name: &str, given: &[String]) -> Result<()> {
    let settings = given
        .iter()
        .map(|g| setting(g, Use::Configure))
        .collect::<Result<Vec<_>>>()?;
    let vm = super::find(conn, name).await?;
    let map: HashMap<&str, Variant<'_>> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), Variant::from(v.clone())))
        .collect();
    vm.configure(map)
        .await
        .map_err(Error::call(format!("configure {name}")))
}
