//! `splitplan inspect MODEL`: read the header of every shard, describe the model, print the report.

use anyhow::Result;
use optimizer_core::gguf::{self, ReadOptions};
use optimizer_core::model::ModelDescription;
use optimizer_core::render::inspect::{self, InspectReport};

use super::Outcome;
use crate::cli::InspectArgs;
use crate::printer::{Level, Printer};

pub fn run(args: &InspectArgs, printer: &Printer) -> Result<Outcome> {
    // Both errors name the file and say what is wrong with it; a context line would only repeat it.
    let gguf = gguf::open_model(&args.model, &ReadOptions::default())?;
    let model = ModelDescription::from_gguf(&gguf)?;
    for w in &model.warnings {
        printer.message(Level::Warning, &w.to_string());
    }
    let report = InspectReport::new(&gguf, &model);
    printer.data(&if args.json { inspect::json(&report) } else { inspect::text(&report) })?;
    Ok(Outcome::Done)
}
