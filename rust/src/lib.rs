//! kobako's native core: the system calls of the container runtime, exposed to Python as
//! `kobako._native`. Module wiring only; see each module for its job.

pub mod cgroup;
pub mod error;
pub mod layer;
pub mod net;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod sys;

mod py;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
