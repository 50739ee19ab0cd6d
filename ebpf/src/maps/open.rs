//! The pinned maps of one pin path behind one handle: the pin directory is
//! checked once, when the handle is made, and each map is opened and
//! checked against this build's layout (aya reuses a pinned map without
//! looking at it) at most once, when first used. ADD, DEL, GC, `podmeterctl`
//! and the exporter pass the handle on instead of reopening maps by name.

use std::{io, path::Path, sync::OnceLock};

use aya::{
    maps::{Map, MapData, MapError},
    sys::SyscallError,
};

use crate::{
    lock::PinLock,
    pin_dir,
    pins::{PinLayout, COUNTERS_MAP, DEVICES_MAP, DROPS_MAP, REGISTRY_MAP, SOURCES_MAP},
    programs::object::{MapSpec, MAPS},
    Error,
};

/// The maps every reader of the counters needs.
const READERS_MAPS: [&str; 5] = [
    COUNTERS_MAP,
    REGISTRY_MAP,
    DEVICES_MAP,
    DROPS_MAP,
    SOURCES_MAP,
];

/// Handles on the pinned maps of one pin path.
pub struct PinnedMaps {
    layout: PinLayout,
    /// By index in [`MAPS`]: unset until first used, then the checked map
    /// or `None` if it is not pinned.
    maps: [OnceLock<Option<Map>>; MAPS.len()],
}

impl PinnedMaps {
    /// Checks the pin directory and opens the maps the readers need; fails
    /// if one is missing or has another layout. The others open when used.
    pub fn open(layout: &PinLayout) -> Result<Self, Error> {
        let maps = Self::open_lazy(layout)?;
        for name in READERS_MAPS {
            maps.map(name)?;
        }
        Ok(maps)
    }

    /// Checks the pin directory only: each map opens when first used. For
    /// DEL and GC, which must clean what they can when a map is missing (a
    /// first ADD killed while loading) or of another layout.
    pub fn open_lazy(layout: &PinLayout) -> Result<Self, Error> {
        pin_dir::check(layout)?;
        Ok(Self::checked(layout))
    }

    /// A handle on a pin path whose directory the caller has just checked.
    pub(crate) fn checked(layout: &PinLayout) -> Self {
        Self {
            layout: layout.clone(),
            maps: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Another handle on this one's pin directory, checked already: none of
    /// its maps is open yet (for a store that takes its maps, where this
    /// handle is shared).
    pub fn fresh(&self) -> Self {
        Self::checked(&self.layout)
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    /// Opens and checks every map that is pinned (missing ones are fine:
    /// loading will create them).
    pub(crate) fn check_all(&self) -> Result<(), Error> {
        MAPS.iter()
            .try_for_each(|spec| self.slot(spec.name).map(drop))
    }

    /// The pin lock, shared, on the directory this handle checked.
    pub fn lock_shared(&self) -> Result<PinLock, Error> {
        PinLock::on_checked(&self.layout, std::fs::File::lock_shared, false)
    }

    /// Like [`lock_shared`](Self::lock_shared), but `None` where nothing
    /// is pinned yet: for DEL, which then has no policy edit to wait for.
    pub fn lock_shared_if_pinned(&self) -> Result<Option<PinLock>, Error> {
        let dir = self.layout.dir();
        if !dir.try_exists().map_err(|e| Error::io("stat", &dir, e))? {
            return Ok(None);
        }
        self.lock_shared().map(Some)
    }

    /// The pin lock, exclusive, on the directory this handle checked.
    pub fn lock_exclusive(&self) -> Result<PinLock, Error> {
        PinLock::on_checked(&self.layout, std::fs::File::lock, true)
    }

    /// The map `name`, opened and checked on first use; `None` if it is not
    /// pinned. A failure is not kept: the next use tries again.
    fn slot(&self, name: &str) -> Result<Option<&Map>, Error> {
        let i = index(name);
        if let Some(map) = self.maps[i].get() {
            return Ok(map.as_ref());
        }
        let opened = open_checked(&self.layout, &MAPS[i])?;
        Ok(self.maps[i].get_or_init(|| opened).as_ref())
    }

    fn slot_mut(&mut self, name: &str) -> Result<Option<&mut Map>, Error> {
        self.slot(name)?;
        Ok(self.maps[index(name)].get_mut().and_then(Option::as_mut))
    }

    /// Whether the map `name` is pinned (opening it if it is).
    pub(crate) fn is_pinned(&self, name: &str) -> Result<bool, Error> {
        Ok(self.slot(name)?.is_some())
    }

    /// The map `name`; an error if it is not pinned.
    pub(crate) fn map(&self, name: &str) -> Result<&Map, Error> {
        self.slot(name)?.ok_or_else(|| self.not_pinned(name))
    }

    /// The map `name`, to write; an error if it is not pinned.
    pub(crate) fn map_mut(&mut self, name: &str) -> Result<&mut Map, Error> {
        let missing = self.not_pinned(name);
        self.slot_mut(name)?.ok_or(missing)
    }

    /// The map `name` as the typed map `T`, for reading.
    pub(crate) fn typed<'a, T: TryFrom<&'a Map, Error = MapError>>(
        &'a self,
        name: &str,
    ) -> Result<T, Error> {
        T::try_from(self.map(name)?).map_err(|e| self.error(name, e))
    }

    /// The map `name` as the typed map `T`, for writing.
    pub(crate) fn typed_mut<'a, T: TryFrom<&'a mut Map, Error = MapError>>(
        &'a mut self,
        name: &str,
    ) -> Result<T, Error> {
        let path = self.layout.map(name);
        T::try_from(self.map_mut(name)?).map_err(|source| Error::Map { path, source })
    }

    /// Runs `f` on the map `name` if it is pinned (a map that is not holds
    /// nothing to read or remove).
    pub(crate) fn if_pinned(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Map) -> Result<(), MapError>,
    ) -> Result<(), Error> {
        let path = self.layout.map(name);
        match self.slot_mut(name)? {
            Some(map) => f(map).map_err(|source| Error::Map { path, source }),
            None => Ok(()),
        }
    }

    /// Takes the map `name` out of the handle, as the typed map `T`, for a
    /// store that keeps its maps (a later use here opens it again).
    pub(crate) fn take<T: TryFrom<Map, Error = MapError>>(
        &mut self,
        name: &str,
    ) -> Result<T, Error> {
        self.map(name)?;
        let map = self.maps[index(name)]
            .take()
            .flatten()
            .expect("opened just above");
        T::try_from(map).map_err(|e| self.error(name, e))
    }

    pub(crate) fn error(&self, map: &str, source: MapError) -> Error {
        Error::Map {
            path: self.layout.map(map),
            source,
        }
    }

    /// What opening a map that is not pinned fails with.
    fn not_pinned(&self, name: &str) -> Error {
        self.error(
            name,
            SyscallError {
                call: "BPF_OBJ_GET",
                io_error: io::Error::from_raw_os_error(libc::ENOENT),
            }
            .into(),
        )
    }
}

fn index(name: &str) -> usize {
    MAPS.iter()
        .position(|m| m.name == name)
        .expect("every map name has a spec")
}

/// Opens the pinned map of `spec` and checks it; `None` if it is not pinned.
fn open_checked(layout: &PinLayout, spec: &MapSpec) -> Result<Option<Map>, Error> {
    let path = layout.map(spec.name);
    let data = match MapData::from_pin(&path) {
        Ok(data) => data,
        // BPF_OBJ_GET's ENOENT: nothing at that path (other failures, EIO
        // say, are not "not pinned").
        Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(source) => return Err(Error::Map { path, source }),
    };
    check(&path, spec, &data)?;
    Map::from_map_data(data)
        .map(Some)
        .map_err(|source| Error::Map { path, source })
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
