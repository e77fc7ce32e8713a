//! One camera's session: clock → services → profiles and URIs → PullPoint loop.
//!
//! Any failure ends the session; the task reports the camera offline and starts a new one
//! after a back-off. A camera that rebooted has forgotten its subscription, so the next
//! `PullMessages` faults (or the address is gone); the new session re-creates it and the
//! `Initialized` states it sends reveal what changed in the gap (see [`crate::events`]).

use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::log::LogLimiter;
use campusgw_sdk::{Backoff, Class, DeviceHealth, DriverContext, EmitError, NewEvent};
use chrono::{TimeDelta, Utc};
use reqwest::Url;
use serde_json::json;
use tokio::time::Instant;

use super::{Camera, CameraStatus, StatusBoard, StreamLink};
use crate::OnvifConfig;
use crate::client::{CallError, CameraClient, Credentials};
use crate::events::{self, DEVICE_CLOCK_SKEW, PropertyStates, VIDEO_STREAMS};
use crate::soap::{self, NS_TEV, NS_TRT};

/// When to renew after creating or renewing: early enough that a long-poll in progress and
/// the renew call itself both fit before the subscription would lapse.
fn renew_after(lifetime: Duration, pull: Duration, request: Duration) -> Duration {
    lifetime.saturating_sub(pull + request).max(lifetime / 4)
}

/// A camera task.
pub(super) struct CameraTask {
    cam: Camera,
    config: Arc<OnvifConfig>,
    client: CameraClient,
    board: Arc<StatusBoard>,
    states: PropertyStates,
    skew_flagged: bool,
    streams_sent: Option<Vec<StreamLink>>,
    /// The live subscription's address, unsubscribed at shutdown.
    sub: Option<Url>,
    log: LogLimiter,
}

/// Why a session ended.
enum End {
    Shutdown,
    Failed(CallError),
    Journal(String),
}

impl From<CallError> for End {
    fn from(e: CallError) -> End {
        End::Failed(e)
    }
}

impl CameraTask {
    pub(super) fn new(
        cam: Camera,
        config: Arc<OnvifConfig>,
        http: reqwest::Client,
        board: Arc<StatusBoard>,
    ) -> CameraTask {
        let creds = match (&cam.user, &cam.password) {
            (Some(user), Some(password)) => Some(Credentials {
                user: user.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        let client = CameraClient::new(http, cam.xaddr.clone(), creds, cam.allow_http);
        CameraTask {
            cam,
            config,
            client,
            board,
            states: PropertyStates::default(),
            skew_flagged: false,
            streams_sent: None,
            sub: None,
            log: LogLimiter::new(Duration::from_secs(60)),
        }
    }

    pub(super) async fn run(mut self, cx: DriverContext) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            let started = Instant::now();
            match self.session(&cx).await {
                End::Shutdown => return self.unsubscribe().await,
                End::Journal(why) => self.failed(&cx, format!("journal refused events: {why}")),
                End::Failed(e) => self.failed(&cx, e.to_string()),
            }
            // A session that ran a while was healthy: start the back-off over.
            if started.elapsed() > Duration::from_secs(60) {
                backoff.reset();
            }
            if !cx.sleep(backoff.next_delay()).await {
                return;
            }
        }
    }

    /// Ends the subscription at shutdown so the camera frees it now rather than at expiry.
    async fn unsubscribe(&mut self) {
        let Some(sub) = self.sub.take() else { return };
        let t = self.config.request_timeout.0.min(Duration::from_secs(3));
        let r = self
            .client
            .call(
                &sub,
                Some(soap::ACTION_UNSUBSCRIBE),
                &soap::unsubscribe(),
                t,
            )
            .await;
        if let Err(e) = r {
            tracing::info!(camera = self.cam.device.as_str(), error = %e, "onvif unsubscribe at shutdown failed");
        }
    }

    fn failed(&mut self, cx: &DriverContext, why: String) {
        if let Some(held) = self.log.allow() {
            tracing::warn!(camera = self.cam.device.as_str(), error = %why, held_back = held, "onvif camera session ended");
        }
        metrics::counter!("campusgw_onvif_session_failures_total").increment(1);
        cx.report_health(&self.cam.device, DeviceHealth::Offline(why.clone()));
        self.board.update(&self.cam.device, |s| {
            s.connected = false;
            s.last_error = Some(why);
        });
    }

    async fn session(&mut self, cx: &DriverContext) -> End {
        tokio::select! {
            end = self.session_inner(cx) => end,
            () = cx.shutdown().cancelled() => End::Shutdown,
        }
    }

    async fn session_inner(&mut self, cx: &DriverContext) -> End {
        let timeout = self.config.request_timeout.0;
        let base = self.client.base().clone();
        if let Err(e) = self.measure_clock(cx, &base, timeout).await {
            return e;
        }
        let (media, events) = match self.services(&base, timeout).await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        if let Err(e) = self.media(cx, &media, timeout).await {
            return e;
        }
        if let Err(e) = self.event_properties(&events, timeout).await {
            return e.into();
        }
        self.pull_loop(cx, &events).await
    }

    async fn measure_clock(
        &mut self,
        cx: &DriverContext,
        base: &Url,
        t: Duration,
    ) -> Result<(), End> {
        let sent = Utc::now();
        let body = self
            .client
            .call_anonymous(base, &soap::get_system_date_and_time(), t)
            .await?;
        let camera = soap::parse_system_date_and_time(&body).map_err(CallError::from)?;
        // The answer was made somewhere between sending and now; take the middle.
        let mid = sent + (Utc::now() - sent) / 2;
        let skew = camera - mid;
        self.client.set_skew(skew);
        self.board.update(&self.cam.device, |s| {
            s.clock_skew_s = Some(skew.num_seconds())
        });
        let limit = TimeDelta::from_std(self.config.clock_skew_limit.0).unwrap_or(TimeDelta::MAX);
        let off = skew.abs() > limit;
        if off && !self.skew_flagged {
            let e = NewEvent::new(DEVICE_CLOCK_SKEW, Class::Operations)
                .device(self.cam.device.clone())
                .payload(json!({
                    "camera": self.cam.device.as_str(),
                    "skew_seconds": skew.num_seconds(),
                    "limit_seconds": limit.num_seconds(),
                }));
            self.emit(cx, e).await?;
        }
        self.skew_flagged = off;
        Ok(())
    }

    /// Media and event service addresses from `GetServices`; the device address when a
    /// camera does not list one (many serve every service on one URL).
    async fn services(&mut self, base: &Url, t: Duration) -> Result<(Url, Url), CallError> {
        let answer = self
            .client
            .call(base, None, &soap::get_services(), t)
            .await
            .and_then(|b| soap::parse_services(&b).map_err(CallError::from));
        let services = match answer {
            Ok(s) => s,
            // Profile S devices before 2.2 lack GetServices; they serve all on one URL.
            Err(CallError::Soap(soap::SoapError::Fault { .. })) => Vec::new(),
            Err(e) => return Err(e),
        };
        let find = |ns: &str| -> Result<Url, CallError> {
            match services.iter().find(|(n, _)| n == ns) {
                Some((_, x)) => self.client.pin(x),
                None => Ok(base.clone()),
            }
        };
        Ok((find(NS_TRT)?, find(NS_TEV)?))
    }

    async fn media(&mut self, cx: &DriverContext, media: &Url, t: Duration) -> Result<(), End> {
        let body = self
            .client
            .call(media, None, &soap::get_profiles(), t)
            .await?;
        let profiles = soap::parse_profiles(&body).map_err(CallError::from)?;
        let mut streams = Vec::new();
        for p in profiles.iter().take(4) {
            let b = self
                .client
                .call(media, None, &soap::get_stream_uri(&p.token), t)
                .await?;
            streams.push(StreamLink {
                profile: p.token.clone(),
                name: p.name.clone(),
                uri: soap::parse_media_uri(&b).map_err(CallError::from)?,
            });
        }
        let snapshot = match profiles.first() {
            Some(p) => {
                let b = self
                    .client
                    .call(media, None, &soap::get_snapshot_uri(&p.token), t)
                    .await?;
                let uri = soap::parse_media_uri(&b).map_err(CallError::from)?;
                Some(self.client.pin(&uri)?.to_string())
            }
            None => None,
        };
        self.board.update(&self.cam.device, |s| {
            s.streams = streams.clone();
            s.snapshot_uri = snapshot;
        });
        if self.streams_sent.as_ref() != Some(&streams) {
            let e = NewEvent::new(VIDEO_STREAMS, Class::Operations)
                .device(self.cam.device.clone())
                .payload(json!({ "camera": self.cam.device.as_str(), "streams": streams }));
            self.emit(cx, e).await?;
            self.streams_sent = Some(streams);
        }
        Ok(())
    }

    /// What the camera's analytics can report; a camera that does not answer
    /// `GetEventProperties` (a fault) is still subscribed, it just does not say.
    async fn event_properties(&mut self, events: &Url, t: Duration) -> Result<(), CallError> {
        let body = soap::get_event_properties();
        let answer = self
            .client
            .call(events, Some(soap::ACTION_EVENT_PROPERTIES), &body, t)
            .await
            .and_then(|b| soap::parse_event_properties(&b).map_err(CallError::from));
        let topics = match answer {
            Ok(t) => t,
            Err(CallError::Soap(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mapped: Vec<String> = topics
            .into_iter()
            .filter(|t| events::classify(t).is_some())
            .collect();
        self.board
            .update(&self.cam.device, |s| s.analytics_topics = mapped);
        Ok(())
    }

    async fn pull_loop(&mut self, cx: &DriverContext, events: &Url) -> End {
        let t = self.config.request_timeout.0;
        let lifetime = self.config.subscription_lifetime.0;
        let pull = self.config.pull_timeout.0;
        let sub = match self.create(events, t, lifetime).await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        self.sub = Some(sub.clone());
        cx.report_health(&self.cam.device, DeviceHealth::Online);
        self.board.update(&self.cam.device, |s: &mut CameraStatus| {
            s.connected = true;
            s.last_error = None;
            s.subscriptions += 1;
        });
        let renew_after = renew_after(lifetime, pull, t);
        let mut renew_at = Instant::now() + renew_after;
        let end = loop {
            if Instant::now() >= renew_at {
                let body = soap::renew(lifetime.as_secs());
                match self
                    .client
                    .call(&sub, Some(soap::ACTION_RENEW), &body, t)
                    .await
                {
                    Ok(b) => {
                        if let Err(e) = soap::parse_renew(&b) {
                            break End::Failed(e.into());
                        }
                        renew_at = Instant::now() + renew_after;
                    }
                    Err(e) => break End::Failed(e),
                }
            }
            let body = soap::pull_messages(pull.as_secs().max(1), 64);
            let answer = self
                .client
                .call(&sub, Some(soap::ACTION_PULL), &body, t + pull)
                .await
                .and_then(|b| soap::parse_pull_messages(&b).map_err(CallError::from));
            match answer {
                Ok(notes) => {
                    cx.activity(&self.cam.device);
                    if let Err(e) = self.deliver(cx, &notes).await {
                        break e;
                    }
                }
                Err(e) => break End::Failed(e),
            }
        };
        // The camera refused or lost it; a new session makes a new one.
        self.sub = None;
        end
    }

    async fn create(
        &mut self,
        events: &Url,
        t: Duration,
        lifetime: Duration,
    ) -> Result<Url, CallError> {
        let body = soap::create_pull_point_subscription(lifetime.as_secs());
        let b = self
            .client
            .call(events, Some(soap::ACTION_CREATE), &body, t)
            .await?;
        let sub = soap::parse_subscription(&b)?;
        self.client.pin(&sub.address)
    }

    async fn deliver(
        &mut self,
        cx: &DriverContext,
        notes: &[soap::Notification],
    ) -> Result<(), End> {
        let location = self.cam.location.clone();
        let batch: Vec<NewEvent> = notes
            .iter()
            .filter_map(|n| events::map(n, &self.cam.device, location.as_ref(), &mut self.states))
            .collect();
        let props = self.states.snapshot();
        self.board
            .update(&self.cam.device, |s| s.properties = props);
        if batch.is_empty() {
            return Ok(());
        }
        // The camera has handed these over and will not send them again: keep trying while
        // the journal cannot write (the pull stalls; a lapsed subscription is re-created and
        // its Initialized states catch up), give up only when the journal closes.
        loop {
            match cx.emit_all(batch.clone()).await {
                Ok(_) => return Ok(()),
                Err(EmitError::Closed) => return Err(End::Journal("journal is closed".into())),
                Err(EmitError::Storage(why)) => {
                    if let Some(held) = self.log.allow() {
                        tracing::warn!(camera = self.cam.device.as_str(), error = %why, held_back = held, "onvif events wait for the journal");
                    }
                    if !cx.sleep(Duration::from_millis(500)).await {
                        return Err(End::Shutdown);
                    }
                }
            }
        }
    }

    async fn emit(&self, cx: &DriverContext, e: NewEvent) -> Result<(), End> {
        cx.emit(e)
            .await
            .map(|_| ())
            .map_err(|e| End::Journal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renew_leaves_room_for_a_long_poll_and_the_renew_call() {
        let s = Duration::from_secs;
        assert_eq!(renew_after(s(60), s(10), s(10)), s(40));
        assert_eq!(renew_after(s(4), s(1), s(2)), s(1));
        assert_eq!(renew_after(s(2), s(1), s(2)), Duration::from_millis(500));
    }
}
