//! The embedded LAN broker: a small MQTT 3.1.1 server inside the gateway for
//! the site's devices (band hubs, Wi-Fi machines). It only takes readings
//! in: every PUBLISH goes to the gateway's router, and its PUBACK (PUBREC
//! for QoS 2) is sent only once the record is durable, so a device may
//! forget a reading exactly when the gateway can no longer lose it.
//!
//! What a stranger on the site network can hold is bounded:
//! - connections before CONNECT: [`MAX_PENDING`] in all and
//!   [`MAX_PENDING_PER_ADDRESS`] per address, each closed after
//!   [`CONNECT_DEADLINE`];
//! - connections after CONNECT: `max_connections` in all, and per account and
//!   per address as configured;
//! - descriptors: LAN sockets never take the last [`FD_RESERVE`] of the
//!   process's limit, so the uplink, the buffer and serial ports get theirs;
//!   an `accept` that fails (`EMFILE`) backs off and logs at a bounded rate;
//! - memory: nothing is kept per topic, retained messages are not retained,
//!   wills are not published (no one subscribes here), and SUBSCRIBE is
//!   refused; a connection holds at most `max_inflight` unacknowledged
//!   publishes and then is not read until the oldest is durable.
//!
//! Accounts: with a users file, each account may publish only on the topics
//! of the devices configured for it; a publish elsewhere is acknowledged,
//! dropped and counted (MQTT 3.1.1 has no negative PUBACK). A client id
//! held by one account cannot be taken over by another.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::{
    Codec, ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{valid_topic, QoS};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::mqtt::matches;
use super::LogLimit;
use crate::config::EmbeddedLan;
use crate::listen::Acceptor;
use crate::status::Stats;

/// Connections that have not sent CONNECT yet, in all and per address.
pub const MAX_PENDING: usize = 64;
pub const MAX_PENDING_PER_ADDRESS: usize = 8;
/// Time a new connection has for its TLS handshake and CONNECT.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// Descriptors LAN sockets leave to the rest of the gateway.
pub const FD_RESERVE: usize = 128;
/// A refused login is answered after this long, to slow password guessing.
const REFUSAL_DELAY: Duration = Duration::from_millis(500);
/// Idle time allowed to a client that asked for no keep-alive.
const MAX_IDLE: Duration = Duration::from_secs(15 * 60);
/// Room for the fixed header and topic beside the payload.
const PACKET_OVERHEAD: usize = 1024;

/// One message from a device, for the router. `done` is completed once
/// the gateway is finished with it (its record durable, or the message
/// dropped as undecodable); dropped unanswered, the message is not
/// acknowledged.
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub done: oneshot::Sender<()>,
}

/// Who may publish where: account -> the topic filters of its devices.
/// Empty with an anonymous broker, which lets anyone publish anywhere.
#[derive(Debug, Default, Clone)]
pub struct Acl {
    filters: HashMap<String, Vec<String>>,
}

impl Acl {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Acl {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        for (account, filter) in pairs {
            filters.entry(account).or_default().push(filter);
        }
        Acl { filters }
    }

    /// Whether `account` (`None`: anonymous) may publish on `topic`.
    fn allows(&self, account: Option<&str>, topic: &str) -> bool {
        match account {
            None => true,
            Some(account) => (self.filters.get(account))
                .is_some_and(|filters| filters.iter().any(|f| matches(f, topic))),
        }
    }
}

/// Connection counts, for the limits.
#[derive(Default)]
struct Counts {
    pending: usize,
    pending_by_address: HashMap<IpAddr, usize>,
    connected: usize,
    by_account: HashMap<String, usize>,
    by_address: HashMap<IpAddr, usize>,
    /// Client id -> (account, connection number, its stop token).
    clients: HashMap<String, (Option<String>, u64, CancellationToken)>,
    next_connection: u64,
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// What every connection shares.
struct Shared {
    users: HashMap<String, String>,
    acl: Acl,
    max_connections: usize,
    max_per_account: usize,
    max_per_address: usize,
    max_inflight: usize,
    max_packet: usize,
    /// LAN sockets allowed open at once (pending and connected).
    fd_budget: usize,
    counts: Mutex<Counts>,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<Stats>,
    refused_log: Mutex<LogLimit>,
    denied_log: Mutex<LogLimit>,
    limit_log: Mutex<LogLimit>,
}

impl Shared {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_allowed(log: &Mutex<LogLimit>) -> Option<u64> {
        log.lock().unwrap_or_else(|p| p.into_inner()).allow()
    }

    /// A slot for a new connection from `address` before its CONNECT.
    fn admit(self: &Arc<Self>, address: IpAddr) -> Option<Pending> {
        let mut counts = self.counts();
        let from_address = counts
            .pending_by_address
            .get(&address)
            .copied()
            .unwrap_or(0);
        if counts.pending >= MAX_PENDING
            || from_address >= MAX_PENDING_PER_ADDRESS
            || counts.pending + counts.connected >= self.fd_budget
        {
            return None;
        }
        counts.pending += 1;
        *counts.pending_by_address.entry(address).or_default() += 1;
        Some(Pending {
            shared: self.clone(),
            address,
        })
    }

    /// Counts a refused connection and logs it at a bounded rate.
    fn refuse(&self, peer: SocketAddr, why: &str) {
        self.stats.lan_connections_refused.fetch_add(1, Relaxed);
        if let Some(suppressed) = Self::log_allowed(&self.limit_log) {
            warn!(message = "LAN connection refused.", peer = %peer, reason = why, suppressed, stage = "source");
        }
    }
}

/// A connection not yet past CONNECT; its slot is freed when dropped.
struct Pending {
    shared: Arc<Shared>,
    address: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut counts = self.shared.counts();
        counts.pending -= 1;
        decrement(&mut counts.pending_by_address, &self.address);
    }
}

/// A logged-in client's place in the counts; freed when dropped.
struct Session {
    shared: Arc<Shared>,
    address: IpAddr,
    account: Option<String>,
    client_id: String,
    number: u64,
    stop: CancellationToken,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut counts = self.shared.counts();
        counts.connected -= 1;
        decrement(&mut counts.by_address, &self.address);
        if let Some(account) = &self.account {
            decrement(&mut counts.by_account, account);
        }
        if counts.clients.get(&self.client_id).map(|c| c.1) == Some(self.number) {
            counts.clients.remove(&self.client_id);
        }
        self.shared.stats.lan_connections.fetch_sub(1, Relaxed);
    }
}

/// The broker's listeners, bound.
pub struct LanBroker {
    listeners: Vec<(TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
    shared: Arc<Shared>,
}

/// Why the broker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}; is another broker using the port?")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("[lan.tls]: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl LanBroker {
    /// Binds every listener of `lan`; messages go to `inbound`.
    pub async fn bind(
        lan: &EmbeddedLan,
        acl: Acl,
        inbound: mpsc::Sender<Inbound>,
        stats: Arc<Stats>,
    ) -> Result<LanBroker, StartError> {
        let acceptor = match &lan.tls {
            Some(tls) if !lan.tls_listen.is_empty() => {
                Some(tokio_rustls::TlsAcceptor::from(tls.server_config()?))
            }
            _ => None,
        };
        let mut listeners = Vec::new();
        let plain = lan.listen.iter().map(|a| (*a, None));
        let secure = lan.tls_listen.iter().map(|a| (*a, acceptor.clone()));
        for (address, tls) in plain.chain(secure) {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Bind { address, source })?;
            listeners.push((listener, tls));
        }
        let fd_budget = descriptor_limit().saturating_sub(FD_RESERVE).max(1);
        if fd_budget < lan.max_connections + MAX_PENDING {
            warn!(
                message = "The descriptor limit allows fewer LAN connections than [lan] max_connections; raise LimitNOFILE.",
                lan_sockets = fd_budget,
                max_connections = lan.max_connections,
                stage = "source"
            );
        }
        let every = Duration::from_secs(10);
        let shared = Shared {
            users: lan.users.clone(),
            acl,
            max_connections: lan.max_connections,
            max_per_account: lan.max_per_account,
            max_per_address: lan.max_per_address,
            max_inflight: lan.max_inflight,
            max_packet: lan.max_payload_bytes + PACKET_OVERHEAD,
            fd_budget,
            counts: Mutex::default(),
            inbound,
            stats,
            refused_log: Mutex::new(LogLimit::new(every)),
            denied_log: Mutex::new(LogLimit::new(every)),
            limit_log: Mutex::new(LogLimit::new(every)),
        };
        Ok(LanBroker {
            listeners,
            shared: Arc::new(shared),
        })
    }

    /// The bound addresses (plain listeners first).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        (self.listeners.iter())
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for (listener, tls) in self.listeners {
            let address = listener.local_addr().ok();
            info!(message = "LAN broker listening.", address = ?address, tls = tls.is_some(), accounts = self.shared.users.len());
            tasks.spawn(accept_loop(
                listener,
                tls,
                self.shared.clone(),
                shutdown.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// The process's soft descriptor limit.
fn descriptor_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX),
        _ => 1024,
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut listener = Acceptor::new(listener, "LAN broker");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let Some(pending) = shared.admit(peer.ip()) else {
            shared.refuse(peer, "too many connections waiting to log in");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(stream, peer, pending, stop).await,
                Some(acceptor) => {
                    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => connection(stream, peer, pending, stop).await,
                        Ok(Err(e)) => {
                            debug!(message = "LAN TLS handshake failed.", peer = %peer, error = %e)
                        }
                        Err(_) => debug!(message = "LAN TLS handshake timed out.", peer = %peer),
                    }
                }
            }
        });
    }
}

/// Constant-time comparison, so a password is not guessed by timing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// One client connection, from its CONNECT to its end.
async fn connection<S>(stream: S, peer: SocketAddr, pending: Pending, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let shared = pending.shared.clone();
    let codec = Codec {
        max_incoming_size: shared.max_packet,
        max_outgoing_size: 64,
    };
    let mut framed = Framed::new(stream, codec);
    let connect = match tokio::time::timeout(CONNECT_DEADLINE, framed.next()).await {
        Ok(Some(Ok(Packet::Connect(connect)))) => connect,
        _ => return debug!(message = "LAN connection closed before a valid CONNECT.", peer = %peer),
    };
    let account = match (&connect.login, shared.users.is_empty()) {
        (_, true) => None,
        (Some(login), false)
            if shared
                .users
                .get(&login.username)
                .is_some_and(|p| same(p, &login.password)) =>
        {
            Some(login.username.clone())
        }
        (login, false) => {
            shared.stats.lan_logins_refused.fetch_add(1, Relaxed);
            if let Some(suppressed) = Shared::log_allowed(&shared.refused_log) {
                warn!(
                    message = "LAN login refused: unknown account or wrong password.",
                    peer = %peer,
                    account = login.as_ref().map(|l| l.username.as_str()).unwrap_or(""),
                    suppressed,
                    stage = "source"
                );
            }
            tokio::time::sleep(REFUSAL_DELAY).await;
            let _ = (framed.send(connack(ConnectReturnCode::BadUserNamePassword))).await;
            return;
        }
    };
    let client_id = match connect.client_id.as_str() {
        "" if connect.clean_session => format!("{peer}"),
        "" => {
            let _ = framed.send(connack(ConnectReturnCode::BadClientId)).await;
            return;
        }
        id => id.to_string(),
    };
    let session = match take_place(&pending, account, client_id) {
        Ok(session) => session,
        Err((code, why)) => {
            shared.refuse(peer, why);
            let _ = framed.send(connack(code)).await;
            return;
        }
    };
    drop(pending);
    if framed
        .send(connack(ConnectReturnCode::Success))
        .await
        .is_err()
    {
        return;
    }
    let idle = match connect.keep_alive {
        0 => MAX_IDLE,
        secs => Duration::from_millis(u64::from(secs) * 1500),
    };
    debug!(message = "LAN device connected.", peer = %peer, client = %session.client_id);
    let stop = session.stop.clone();
    tokio::select! {
        why = serve_client(&mut framed, &session, idle) => {
            debug!(message = "LAN device disconnected.", peer = %peer, client = %session.client_id, reason = why);
        }
        _ = stop.cancelled() => {
            debug!(message = "LAN client taken over by a new connection with its id.", peer = %peer, client = %session.client_id);
        }
        _ = shutdown.cancelled() => {}
    }
}

fn connack(code: ConnectReturnCode) -> Packet {
    Packet::ConnAck(ConnAck::new(code, false))
}

/// Takes a place among the connected clients, within the limits; a client
/// with the same id and account is taken over, one of another account is
/// not.
fn take_place(
    pending: &Pending,
    account: Option<String>,
    client_id: String,
) -> Result<Session, (ConnectReturnCode, &'static str)> {
    let shared = &pending.shared;
    let mut counts = shared.counts();
    let address = pending.address;
    let previous = counts.clients.get(&client_id);
    if previous.is_some_and(|(holder, _, _)| *holder != account) {
        return Err((
            ConnectReturnCode::BadClientId,
            "client id in use by another account",
        ));
    }
    let taking_over = previous.is_some();
    let from_account =
        (account.as_ref()).map_or(0, |a| counts.by_account.get(a).copied().unwrap_or(0));
    let from_address = counts.by_address.get(&address).copied().unwrap_or(0);
    if !taking_over {
        if counts.connected >= shared.max_connections {
            return Err((
                ConnectReturnCode::ServiceUnavailable,
                "max_connections reached",
            ));
        }
        if account.is_some() && from_account >= shared.max_per_account {
            return Err((
                ConnectReturnCode::ServiceUnavailable,
                "max_connections_per_account reached",
            ));
        }
        if from_address >= shared.max_per_address {
            return Err((
                ConnectReturnCode::ServiceUnavailable,
                "max_connections_per_address reached",
            ));
        }
    }
    counts.next_connection += 1;
    let number = counts.next_connection;
    let stop = CancellationToken::new();
    if let Some((_, _, old)) =
        (counts.clients).insert(client_id.clone(), (account.clone(), number, stop.clone()))
    {
        old.cancel();
    }
    counts.connected += 1;
    *counts.by_address.entry(address).or_default() += 1;
    if let Some(account) = &account {
        *counts.by_account.entry(account.clone()).or_default() += 1;
    }
    shared.stats.lan_connections.fetch_add(1, Relaxed);
    Ok(Session {
        shared: shared.clone(),
        address,
        account,
        client_id,
        number,
        stop,
    })
}

/// A publish waiting for the gateway before it is acknowledged.
struct Unacked {
    pkid: u16,
    qos: QoS,
    received: Instant,
    done: oneshot::Receiver<()>,
}

/// Reads a logged-in client's packets until it goes; says why it ended.
async fn serve_client<S>(
    framed: &mut Framed<S, Codec>,
    session: &Session,
    idle: Duration,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let shared = &session.shared;
    let mut unacked: VecDeque<Unacked> = VecDeque::new();
    // QoS 2 publishes acknowledged with PUBREC, awaiting their PUBREL.
    let mut released: HashSet<u16> = HashSet::new();
    loop {
        let room = unacked.len() < shared.max_inflight;
        let oldest = async {
            match unacked.front_mut() {
                Some(u) => (&mut u.done).await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            finished = oldest => {
                let Some(u) = unacked.pop_front() else { continue };
                if !finished {
                    // The gateway is stopping or could not store it: no ack,
                    // the device sends it again.
                    return "gateway not taking messages";
                }
                shared.stats.note_lan_durable(u.received.elapsed());
                let ack = match u.qos {
                    QoS::ExactlyOnce => Packet::PubRec(PubRec::new(u.pkid)),
                    _ => Packet::PubAck(PubAck::new(u.pkid)),
                };
                if framed.send(ack).await.is_err() {
                    return "write failed";
                }
            }
            packet = tokio::time::timeout(idle, framed.next()), if room => {
                let packet = match packet {
                    Err(_) => return "keep-alive expired",
                    Ok(None) => return "closed",
                    Ok(Some(Err(_))) => return "malformed packet or over max_payload_bytes",
                    Ok(Some(Ok(packet))) => packet,
                };
                let reply = match packet {
                    Packet::Publish(publish) => {
                        if !valid_topic(&publish.topic) {
                            return "invalid topic";
                        }
                        let account = session.account.as_deref();
                        let duplicate = publish.qos == QoS::ExactlyOnce && released.contains(&publish.pkid);
                        if duplicate {
                            Some(Packet::PubRec(PubRec::new(publish.pkid)))
                        } else if !shared.acl.allows(account, &publish.topic) {
                            shared.stats.lan_denied.fetch_add(1, Relaxed);
                            if let Some(suppressed) = Shared::log_allowed(&shared.denied_log) {
                                warn!(message = "LAN publish outside the account's devices; dropped.", account = account.unwrap_or(""), topic = %publish.topic, suppressed, stage = "source");
                            }
                            match publish.qos {
                                QoS::AtMostOnce => None,
                                QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(publish.pkid))),
                                QoS::ExactlyOnce => {
                                    released.insert(publish.pkid);
                                    Some(Packet::PubRec(PubRec::new(publish.pkid)))
                                }
                            }
                        } else {
                            let (done, finished) = oneshot::channel();
                            let inbound = Inbound { topic: publish.topic, payload: publish.payload, done };
                            if shared.inbound.send(inbound).await.is_err() {
                                return "gateway stopping";
                            }
                            if publish.qos != QoS::AtMostOnce {
                                if publish.qos == QoS::ExactlyOnce {
                                    released.insert(publish.pkid);
                                }
                                unacked.push_back(Unacked { pkid: publish.pkid, qos: publish.qos, received: Instant::now(), done: finished });
                            }
                            None
                        }
                    }
                    Packet::PubRel(rel) => {
                        released.remove(&rel.pkid);
                        Some(Packet::PubComp(PubComp::new(rel.pkid)))
                    }
                    Packet::PingReq => Some(Packet::PingResp),
                    // Nothing is published to devices here.
                    Packet::Subscribe(s) => Some(Packet::SubAck(SubAck::new(
                        s.pkid,
                        s.filters.iter().map(|_| SubscribeReasonCode::Failure).collect(),
                    ))),
                    Packet::Unsubscribe(u) => Some(Packet::UnsubAck(UnsubAck::new(u.pkid))),
                    Packet::Disconnect => return "disconnected",
                    Packet::Connect(_) => return "second CONNECT",
                    _ => None,
                };
                if released.len() > shared.max_inflight {
                    return "too many QoS 2 messages awaiting PUBREL";
                }
                if let Some(reply) = reply {
                    if framed.send(reply).await.is_err() {
                        return "write failed";
                    }
                }
            }
        }
    }
}

/// Runs a broker for `lan` until `shutdown`; `false` (logged, and kept in
/// `stats` as the LAN error) when it could not start.
pub async fn run(
    lan: &EmbeddedLan,
    acl: Acl,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> bool {
    match LanBroker::bind(lan, acl, inbound, stats.clone()).await {
        Ok(broker) => {
            broker.serve(shutdown).await;
            true
        }
        Err(e) => {
            error!(message = "LAN broker cannot start; MQTT devices are off.", error = %e, stage = "source");
            stats.set_lan_error(e.to_string());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{AsyncClient, Event, MqttOptions};

    /// Whether a PUBACK arrives within `ms`.
    async fn acked(events: &mut rumqttc::EventLoop, ms: u64) -> bool {
        let wait = async {
            loop {
                if let Ok(Event::Incoming(Packet::PubAck(_))) = events.poll().await {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_millis(ms), wait)
            .await
            .is_ok()
    }

    /// A PUBACK goes out only once the gateway is finished with the message.
    #[tokio::test]
    async fn a_publish_is_acknowledged_only_once_it_is_durable() {
        let lan = EmbeddedLan {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            users: HashMap::new(),
            max_connections: 4,
            max_payload_bytes: 4096,
            max_inflight: 10,
            max_per_account: 4,
            max_per_address: 4,
            tls_listen: vec![],
            tls: None,
        };
        let (tx, mut rx) = mpsc::channel(8);
        let broker = LanBroker::bind(&lan, Acl::default(), tx, Arc::default())
            .await
            .unwrap();
        let port = broker.addresses()[0].port();
        let stop = CancellationToken::new();
        tokio::spawn(broker.serve(stop.clone()));
        let (client, mut events) = AsyncClient::new(MqttOptions::new("dev", "127.0.0.1", port), 8);
        client
            .publish("hub/a/hr", QoS::AtLeastOnce, false, b"{}".to_vec())
            .await
            .unwrap();
        assert!(!acked(&mut events, 300).await, "nothing is durable yet");
        let message = rx.recv().await.unwrap();
        assert_eq!(message.topic, "hub/a/hr");
        assert!(!acked(&mut events, 300).await, "still not durable");
        message.done.send(()).unwrap();
        assert!(acked(&mut events, 5000).await, "acknowledged once durable");
        stop.cancel();
    }
}
