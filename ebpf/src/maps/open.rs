//! Opening the pinned maps, after checking they have this build's layout
//! (aya reuses a pinned map without looking at it).

use std::path::Path;

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuHashMap};

use crate::{
    abi::{CounterKey, Dev, DevKey, DropKey, PodCounter, PodInfo, Source, Tcp},
    pin_dir,
    pins::{PinLayout, COUNTERS_MAP, DEVICES_MAP, DROPS_MAP, REGISTRY_MAP, SOURCES_MAP, TCP_MAP},
    programs::object::{MapSpec, MAPS},
    Error,
};

/// Handles on the pinned maps of one pin path.
pub struct PinnedMaps {
    layout: PinLayout,
    pub(crate) counters: PerCpuHashMap<MapData, CounterKey, PodCounter>,
    pub(crate) registry: HashMap<MapData, u32, PodInfo>,
    pub(crate) devices: HashMap<MapData, DevKey, Dev>,
    pub(crate) drops: PerCpuHashMap<MapData, DropKey, PodCounter>,
    pub(crate) sources: HashMap<MapData, u32, Source>,
    pub(crate) tcp: PerCpuHashMap<MapData, u32, Tcp>,
}

impl PinnedMaps {
    /// Opens every map; fails if one is missing or has another layout.
    pub fn open(layout: &PinLayout) -> Result<Self, Error> {
        pin_dir::check(layout)?;
        Ok(Self {
            layout: layout.clone(),
            counters: open_typed(layout, COUNTERS_MAP)?,
            registry: open_typed(layout, REGISTRY_MAP)?,
            devices: open_typed(layout, DEVICES_MAP)?,
            drops: open_typed(layout, DROPS_MAP)?,
            sources: open_typed(layout, SOURCES_MAP)?,
            tcp: open_typed(layout, TCP_MAP)?,
        })
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    pub(crate) fn error(&self, map: &str, source: aya::maps::MapError) -> Error {
        Error::Map {
            path: self.layout.map(map),
            source,
        }
    }
}

fn spec(name: &str) -> &'static MapSpec {
    MAPS.iter()
        .find(|m| m.name == name)
        .expect("every map name has a spec")
}

/// Opens the pinned map `name`, checked against its spec, as the typed map `T`.
pub(crate) fn open_typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    layout: &PinLayout,
    name: &str,
) -> Result<T, Error> {
    let map = open_checked(layout, spec(name))?;
    T::try_from(map).map_err(|source| Error::Map {
        path: layout.map(name),
        source,
    })
}

/// Runs `f` on the pinned map `name` if it is pinned.
pub(crate) fn with_map<T: TryFrom<Map, Error = MapError>>(
    layout: &PinLayout,
    name: &str,
    f: impl FnOnce(&mut T) -> Result<(), MapError>,
) -> Result<(), Error> {
    // `try_exists`: an error looking (EIO, say) is not "not pinned".
    let path = layout.map(name);
    if !path.try_exists().map_err(|e| Error::io("stat", &path, e))? {
        return Ok(());
    }
    let mut map: T = open_typed(layout, name)?;
    f(&mut map).map_err(|source| Error::Map {
        path: layout.map(name),
        source,
    })
}

fn open_checked(layout: &PinLayout, spec: &MapSpec) -> Result<Map, Error> {
    let path = layout.map(spec.name);
    let data = MapData::from_pin(&path).map_err(|source| Error::Map {
        path: path.clone(),
        source,
    })?;
    check(&path, spec, &data)?;
    Map::from_map_data(data).map_err(|source| Error::Map { path, source })
}

/// Checks every map already pinned under `layout` (missing ones are fine:
/// loading will create them).
pub(crate) fn check_existing(layout: &PinLayout) -> Result<(), Error> {
    for spec in &MAPS {
        let path = layout.map(spec.name);
        if path.exists() {
            let data = MapData::from_pin(&path).map_err(|source| Error::Map {
                path: path.clone(),
                source,
            })?;
            check(&path, spec, &data)?;
        }
    }
    Ok(())
}

fn check(path: &Path, spec: &MapSpec, data: &MapData) -> Result<(), Error> {
    let info = data.info().map_err(|source| Error::Map {
        path: path.to_path_buf(),
        source,
    })?;
    let found_type = info.map_type().ok();
    let found = MapSpec {
        name: spec.name,
        map_type: found_type.unwrap_or(spec.map_type),
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    };
    if found_type.is_none() || found != *spec {
        return Err(Error::LayoutMismatch {
            path: path.to_path_buf(),
            expected: describe(spec),
            found: match found_type {
                Some(_) => describe(&found),
                None => "an unknown map type".to_owned(),
            },
        });
    }
    Ok(())
}

fn describe(s: &MapSpec) -> String {
    format!(
        "{:?} key {} B, value {} B, {} entries",
        s.map_type, s.key_size, s.value_size, s.max_entries
    )
}
