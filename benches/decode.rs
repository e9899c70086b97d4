//! Heartbeat datagram codec: strict decode of a full (89-entry) datagram plus iterating its
//! entries, the same with MAC verification, and encoding a full datagram (signed or not).
//!
//! `cargo bench --bench decode`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use presenced_wire::{decode, encode, Encoder, Entry, Header, State, MAX_ENTRIES};

fn full_datagram() -> (Header, Vec<Entry>) {
    let header = Header::new(0xCAFE, 1_735_689_000, 123_456_789, 1_735_689_612_345);
    let entries = (0..MAX_ENTRIES as u64)
        .map(|i| Entry {
            user: i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            device: i as u32,
            state: State::ALL[(i % 4) as usize],
            active: i % 2 == 0,
        })
        .collect();
    (header, entries)
}

fn bench(c: &mut Criterion) {
    let (header, entries) = full_datagram();
    let bytes = encode(&header, &entries).unwrap();
    assert_eq!(bytes.len(), 1472);

    let mut g = c.benchmark_group("datagram");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(MAX_ENTRIES as u64));

    g.bench_function("decode_iterate_89", |b| {
        b.iter(|| {
            let d = decode(black_box(&bytes)).unwrap();
            let mut sum = 0u64;
            for e in d.entries() {
                sum = sum.wrapping_add(e.user);
            }
            black_box(sum)
        })
    });

    // Authentication (SPEC.md § 9): the same datagram signed, decoded, verified, iterated.
    let key = presenced_wire::auth::Key::new([0xA5; 32]);
    let mut signer = Encoder::new(header);
    for e in &entries {
        signer.push(*e).unwrap();
    }
    let signed = signer.finish_signed(&key).unwrap().to_vec();
    g.bench_function("decode_verify_iterate_89", |b| {
        b.iter(|| {
            let d = decode(black_box(&signed)).unwrap();
            assert!(presenced_wire::auth::verify(&d, &key));
            let mut sum = 0u64;
            for e in d.entries() {
                sum = sum.wrapping_add(e.user);
            }
            black_box(sum)
        })
    });

    g.bench_function("encode_signed_89", |b| {
        b.iter(|| black_box(signer.finish_signed(black_box(&key)).unwrap().len()))
    });

    g.bench_function("decode_only_89", |b| {
        b.iter(|| black_box(decode(black_box(&bytes)).unwrap().len()))
    });

    let mut enc = Encoder::new(header);
    g.bench_function("encode_encoder_89", |b| {
        b.iter(|| {
            enc.clear();
            for e in black_box(&entries) {
                enc.push(*e).unwrap();
            }
            black_box(enc.finish().unwrap().len())
        })
    });

    g.bench_function("encode_vec_89", |b| {
        b.iter(|| black_box(encode(black_box(&header), black_box(&entries)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
