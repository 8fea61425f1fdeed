//! The senders of `bench/webhooks.sh`: role changes through Nexus's API, one
//! event each, from one thread per user, each on its own keep-alive
//! connection with one request in flight, spread evenly over time at RATE a
//! second in all (0: as fast as the API answers). Each user's role is
//! assigned and removed in turn, starting from DONE changes already made to
//! it (assigning a role a user holds makes no event). Prints how long the
//! changes took; any answer but 200 fails the run.
//!
//! Usage: `sender BASE_URL TOKEN TOTAL RATE DONE USER_ID...`. Plain threads
//! and blocking sockets: a sender that costs next to nothing leaves the
//! machine's cores to what is measured.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

struct Plan {
    addr: String,
    token: String,
    per_user: usize,
    senders: usize,
    rate: f64,
    done: usize,
    start: Instant,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, token, total, rate, done, users @ ..] = args.as_slice() else {
        eprintln!("usage: sender BASE_URL TOKEN TOTAL RATE DONE USER_ID...");
        std::process::exit(2);
    };
    assert!(!users.is_empty(), "at least one user");
    let number = |s: &str| s.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {s}"));
    let plan = std::sync::Arc::new(Plan {
        addr: base.trim_start_matches("http://").trim_end_matches('/').to_owned(),
        token: token.clone(),
        per_user: number(total) as usize / users.len(),
        senders: users.len(),
        rate: number(rate),
        done: number(done) as usize,
        start: Instant::now(),
    });
    let threads: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(index, user)| {
            let (plan, user) = (plan.clone(), user.clone());
            thread::spawn(move || send(&plan, index, &user))
        })
        .collect();
    for thread in threads {
        thread.join().expect("a sender failed");
    }
    println!("fired {} events in {:.2} s", plan.per_user * plan.senders, plan.start.elapsed().as_secs_f64());
}

fn send(plan: &Plan, index: usize, user: &str) {
    let stream = TcpStream::connect(&plan.addr).expect("connect to Nexus");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the socket"));
    let mut writer = stream;
    let mut line = String::new();
    for n in 0..plan.per_user {
        if plan.rate > 0.0 {
            let due = plan.start + Duration::from_secs_f64((n * plan.senders + index) as f64 / plan.rate);
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let method = if (plan.done + n).is_multiple_of(2) { "PUT" } else { "DELETE" };
        let request = format!(
            "{method} /api/v1/users/{user}/roles/manager HTTP/1.1\r\nHost: {}\r\n\
             Authorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
            plan.addr, plan.token
        );
        writer.write_all(request.as_bytes()).expect("send a request");
        line.clear();
        reader.read_line(&mut line).expect("read the status line");
        assert!(line.starts_with("HTTP/1.1 200 "), "{method} of user {user}'s role answered {line:?}");
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).expect("read a header");
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            assert!(!name.eq_ignore_ascii_case("transfer-encoding"), "only sized bodies are read");
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("a content length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("read the body");
    }
}
