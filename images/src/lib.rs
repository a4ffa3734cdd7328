//! Image recipes (the declarative build description of a group's image) and, later, the OCI
//! image store. Today: parsing and validating recipes so `check` can report on them.

pub mod recipe;

pub use recipe::{load_recipe, Recipe, RecipeError};
