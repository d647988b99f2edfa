//! The request handed to the dispatcher, and what the walk learnt written on the meter.

use crate::dispatch::{ChatRequest, DispatchError, Dispatcher, Routed};
use crate::usage::Meter;

/// Runs the request through the dispatcher; a failure still tells the meter which target
/// it reached, so its usage row names the tier and route.
pub async fn route(dispatcher: &Dispatcher, request: ChatRequest, meter: &mut Meter) -> Result<Routed, DispatchError> {
    let result = dispatcher.chat(request).await;
    note_walk(meter, &result);
    result
}

/// Writes what a walk learnt on the meter, whatever the request: the targets that failed,
/// the time in the queue, and on a failure the last target tried.
pub(super) fn note_walk<R>(meter: &mut Meter, result: &Result<Routed<R>, DispatchError>) {
    let tried = match result {
        Ok(routed) => {
            meter.set_queue_wait(routed.queue_wait);
            routed.failures.as_slice()
        }
        Err(e) => e.tried(),
    };
    for failure in tried {
        meter.add_attempt(failure.tier.as_str(), &failure.route, &failure.to_string());
    }
    if let Err(e) = result {
        if let DispatchError::QueueTimeout { waited, .. } = e {
            meter.set_queue_wait(*waited);
        }
        if let Some((tier, route)) = e.last_target() {
            meter.tried(tier.as_str(), route);
        }
    }
}
