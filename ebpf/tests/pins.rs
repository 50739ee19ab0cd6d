//! Loading, pin reuse and layout checks on a real bpffs (root).

use std::path::PathBuf;

use aya::maps::MapData;
use podmeter_ebpf::{
    maps::PinnedMaps,
    pins::COUNTERS_MAP,
    programs::loader::{ensure_loaded, remove_pins},
    Error, PinLayout,
};

/// A pin path of this test's own, removed on drop.
struct PinDir(PinLayout);

impl PinDir {
    fn new(tag: &str) -> Self {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/pmtest-ebpf-{tag}-{}",
            std::process::id()
        ));
        Self(PinLayout::new(path))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_pins(&self.0).unwrap();
    }
}

fn program_ids(layout: &PinLayout) -> Vec<u32> {
    ["pm_ingress", "pm_egress"]
        .iter()
        .map(|p| {
            aya::programs::ProgramInfo::from_pin(layout.program(p))
                .unwrap()
                .id()
        })
        .collect()
}

#[test]
fn loads_once_and_reuses_the_pins() {
    podmeter_testkit::needs_root!();
    let dir = PinDir::new("reuse");
    ensure_loaded(&dir.0).unwrap();
    let first = program_ids(&dir.0);
    ensure_loaded(&dir.0).unwrap();
    assert_eq!(program_ids(&dir.0), first, "programs were loaded again");
    let maps = PinnedMaps::open(&dir.0).unwrap();
    assert!(maps.pods().unwrap().is_empty());
}

#[test]
fn a_pinned_map_of_another_layout_is_refused() {
    podmeter_testkit::needs_root!();
    let dir = PinDir::new("mismatch");
    std::fs::create_dir_all(dir.0.dir()).unwrap();
    // A per-CPU hash like pm_counters, but with 8-byte values.
    let obj = aya_obj::Map::new_from_params(aya::maps::MapType::PerCpuHash as u32, 8, 8, 16, 0);
    MapData::create(obj, COUNTERS_MAP, None)
        .unwrap()
        .pin(dir.0.map(COUNTERS_MAP))
        .unwrap();

    let err = ensure_loaded(&dir.0)
        .err()
        .expect("loaded over a foreign map");
    assert!(matches!(err, Error::LayoutMismatch { .. }), "{err}");
    assert!(err.to_string().contains("value 8 B"), "{err}");
    assert!(
        !dir.0.program("pm_ingress").exists(),
        "programs were pinned anyway"
    );
    assert!(matches!(
        PinnedMaps::open(&dir.0),
        Err(Error::LayoutMismatch { .. })
    ));
}

#[test]
fn a_pin_path_outside_bpffs_is_refused_before_anything_is_made() {
    podmeter_testkit::needs_root!();
    let tmp = std::env::temp_dir().join(format!("pmtest-notbpf-{}", std::process::id()));
    let err = ensure_loaded(&PinLayout::new(&tmp)).err().unwrap();
    assert!(matches!(err, Error::NotBpffs { .. }), "{err}");
    assert!(!tmp.exists());
}
