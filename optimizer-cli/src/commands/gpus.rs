//! `splitplan gpus`: the GPUs a plan would be for, found or described.

use anyhow::Result;
use optimizer_core::render::gpus::{self, GpusReport};

use super::Outcome;
use crate::cli::GpusArgs;
use crate::printer::{Level, Printer};
use crate::settings;

pub fn run(args: &GpusArgs, printer: &Printer) -> Result<Outcome> {
    let machine = settings::machine(&args.devices)?;
    for note in &machine.notes {
        printer.message(Level::Note, note);
    }
    let config = machine.config.as_ref().map(|p| p.display().to_string());
    let report = GpusReport::new(&machine.hardware, machine.source, config, &machine.pci_bus_ids);
    printer.data(&if args.json { gpus::json(&report) } else { gpus::text(&report) })?;
    Ok(Outcome::Done)
}
