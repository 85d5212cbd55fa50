//! `etcdserverpb.Watch`: many watchers on one bidirectional stream, each stream a task
//! that runs `cairn-mvcc`'s watch protocol over this member's store, its live feed and
//! its permissions, and sends every response as soon as it is made.

use std::pin::Pin;

use cairn_api::etcdserverpb::watch_request::RequestUnion;
use cairn_api::etcdserverpb::watch_server::Watch;
use cairn_api::etcdserverpb::{WatchRequest, WatchResponse};
use cairn_api::mvccpb::Event;
use cairn_mvcc::watch::{CATCH_UP_CHUNK, CatchUp, WatchSource, WatchStream};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status, Streaming};

use super::{Credentials, Service};
use crate::error::Error;
use crate::storage::mvcc::{self, KeySpan, Revisions};

/// Responses queued for a slow client before the stream stops reading changes (and
/// later catches up from disk).
const OUTBOUND: usize = 128;

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Watch for Service {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let credentials = self.credentials(&request).await?;
        let lost = self.leader_lost_signal(request.metadata());
        let inbound = request.into_inner();
        let (outbound, responses) = mpsc::channel(OUTBOUND);
        let limit = self.config.max_request_bytes + super::GRPC_OVERHEAD_BYTES;
        let stream =
            StreamTask { service: self.clone(), credentials, outbound, watchers: WatchStream::new(limit) };
        tokio::spawn(stream.run(inbound, lost));
        let responses = futures::stream::unfold(responses, |mut responses| async move {
            responses.recv().await.map(|response| (response, responses))
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

impl WatchSource for Service {
    fn revisions(&self) -> Result<Revisions, cairn_mvcc::Error> {
        self.view(|_, _, revisions| Ok(revisions)).map_err(store_error)
    }

    fn events_since(
        &self,
        span: KeySpan<'_>,
        from: u64,
        prev_kv: bool,
    ) -> Result<(Vec<(u64, Event)>, Revisions), cairn_mvcc::Error> {
        let read = |kv: &_, index: &_, revisions: Revisions| {
            Ok((mvcc::events_since(kv, index, span, from, CATCH_UP_CHUNK, prev_kv)?, revisions))
        };
        self.view(read).map_err(store_error)
    }
}

fn store_error(error: crate::storage::StorageError) -> cairn_mvcc::Error {
    cairn_mvcc::Error::Redb(error.to_string().trim_start_matches("storage: ").to_owned())
}

struct StreamTask {
    service: Service,
    credentials: Credentials,
    /// Responses, and the error that ends the stream.
    outbound: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: WatchStream,
}

/// Why a stream ends: the client went away, or its status.
enum End {
    Gone,
    Failed(Status),
}

impl From<cairn_mvcc::Error> for End {
    fn from(error: cairn_mvcc::Error) -> Self {
        Self::Failed(Error::from(error).into())
    }
}

impl StreamTask {
    /// Serves the stream until the client goes away, or, for a stream that asked for
    /// a leader (`lost` is set), until this member has lost its leader: then the
    /// stream ends with `etcdserver: no leader`, as etcd's `monitorLeader` ends it,
    /// and the client opens it again where there is a leader.
    async fn run(mut self, mut inbound: Streaming<WatchRequest>, mut lost: Option<super::LeaderLoss>) {
        let mut live = self.service.hub.subscribe();
        let mut progress = tokio::time::interval(self.service.config.watch_progress_notify_interval);
        progress.tick().await;
        loop {
            let step = tokio::select! {
                request = inbound.message() => match request {
                    Ok(Some(request)) => self.handle(request).await,
                    Ok(None) | Err(_) => return,
                },
                batch = live.recv() => match batch {
                    Ok(batch) => {
                        let behind = self.watchers.behind(batch.revision);
                        match self.catch_up(behind).await {
                            Ok(()) => {
                                let responses = self.watchers.deliver(&batch);
                                self.send_all(responses).await
                            }
                            ended => ended,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind the live changes: subscribe again first, so that
                        // nothing is missed, then read what was missed from disk.
                        live = self.service.hub.subscribe();
                        self.catch_up(self.watchers.all()).await
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = progress.tick() => {
                    let current = self.current_revision();
                    self.send_all(self.watchers.notify_progress(current)).await
                }
                () = super::LeaderLoss::lost_if_asked(&mut lost) => {
                    Err(End::Failed(Error::Proposal(cairn_proposal::Error::NoLeader).into()))
                }
            };
            match step {
                Ok(()) => {}
                Err(End::Gone) => return,
                Err(End::Failed(status)) => {
                    let _ = self.outbound.send(Err(status)).await;
                    return;
                }
            }
        }
    }

    async fn send(&self, mut response: WatchResponse) -> Result<(), End> {
        self.service.fill(&mut response.header);
        self.outbound.send(Ok(response)).await.map_err(|_| End::Gone)
    }

    async fn send_all(&self, responses: Vec<WatchResponse>) -> Result<(), End> {
        for response in responses {
            self.send(response).await?;
        }
        Ok(())
    }

    fn current_revision(&self) -> u64 {
        self.service.current_revision().unwrap_or_default()
    }

    /// Catches the watchers in `pending` up from disk, sending each chunk's responses
    /// before reading the next.
    async fn catch_up(&mut self, mut pending: CatchUp) -> Result<(), End> {
        while let Some(responses) = self.watchers.catch_up_step(&self.service, &mut pending)? {
            self.send_all(responses).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, request: WatchRequest) -> Result<(), End> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                if let Err(status) =
                    self.service.check_read(&self.credentials, &create.key, &create.range_end)
                {
                    let refused = cairn_mvcc::watch::refused(self.current_revision(), status.message());
                    return self.send(refused).await;
                }
                let mut responses = Vec::new();
                let pending = self.watchers.create(&self.service, create, &mut responses)?;
                self.send_all(responses).await?;
                self.catch_up(pending).await
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                match self.watchers.cancel(cancel.watch_id, self.current_revision()) {
                    Some(response) => self.send(response).await,
                    None => Ok(()),
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let response = self.watchers.progress(self.current_revision());
                self.send(response).await
            }
            None => Ok(()),
        }
    }
}
