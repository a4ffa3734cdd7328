//! Image recipes (the declarative build description of a group's image), the builder that
//! turns them into reproducible OCI images, and the image store (`docs/images.md`).
//!
//! The API the CLI uses: [`Store::open`] then [`Store::build`], [`Store::list`],
//! [`Store::inspect`], [`Store::remove`], [`Store::prune`], [`Store::import`],
//! [`Store::export`]. Unpacking an image into a rootfs uses [`ImageInfo::layers`] (blob paths
//! and media types, bottom to top) and [`ImageInfo::config`].

mod archive;
pub mod build;
pub mod closure;
pub mod debootstrap;
pub mod digest;
mod docker_archive;
pub mod ignore;
pub mod layer;
pub mod oci;
mod pycheck;
pub mod recipe;
pub mod store;
pub mod walk;

pub use build::{
    BuildError, BuildEvent, BuildObserver, BuildOptions, BuildReport, RunError, RunLayer,
    RunRequest, StepOutcome, StepReport, StepRunner,
};
pub use digest::Digest;
pub use layer::Compression;
pub use pycheck::PyError;
pub use recipe::{load_recipe, Base, Recipe, RecipeError};
pub use store::{ImageInfo, ImageSummary, LayerInfo, PruneReport, Store, StoreError};
pub use walk::WalkStats;
