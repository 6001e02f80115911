//! The glue behind [`export!`](crate::export): keeps the processor instance
//! between calls and converts between the WIT types and the SDK's.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::__private::{WitBatch, WitBatchInfo, WitError, WitOutput};
use crate::{Batch, Config, Error, Output, Processor};

/// Where `export!` keeps the instance `init` made. A component instance is
/// single-threaded, so a thread-local is simply a static here.
pub type Slot<P> = LocalKey<RefCell<Option<P>>>;

/// `processor.init`: builds the processor and stores it, replacing any
/// previous one.
pub fn init<P: Processor>(
    slot: &'static Slot<P>,
    config: Vec<(String, String)>,
) -> Result<(), WitError> {
    let processor = P::init(&Config::new(config)).map_err(Error::into_wit)?;
    slot.with(|cell| *cell.borrow_mut() = Some(processor));
    Ok(())
}

/// `processor.process`: decodes the batch, runs the processor, encodes its
/// output.
pub fn process<P: Processor>(
    slot: &'static Slot<P>,
    info: WitBatchInfo,
    input: WitBatch,
) -> Result<WitOutput, WitError> {
    slot.with(|cell| {
        let mut instance = cell.borrow_mut();
        let processor = instance
            .as_mut()
            .ok_or_else(|| Error::failed("process called before init").into_wit())?;
        let batch = Batch::from_wit(info.into(), input).map_err(Error::into_wit)?;
        let mut out = Output::new(&batch);
        processor
            .process(&batch, &mut out)
            .map_err(Error::into_wit)?;
        Ok(out.into_wit())
    })
}
