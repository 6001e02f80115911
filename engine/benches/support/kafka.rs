//! Shared by the Kafka benchmarks: topics made and filled with generated
//! lines.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice::source::LineMaker;

/// Creates `topic` with `partitions` (one replica).
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topics = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    let result = rt
        .block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .expect("creating topic");
    for r in result {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e:?}"));
    }
}

/// A producer for loading: large batches, since a fetch returns whole
/// batches and that is what lets readers fetch much per request.
pub fn bulk_producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .create()
        .expect("producer")
}

/// Sends `record`, waiting while the producer's queue is full.
pub fn send(producer: &BaseProducer, mut record: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((_, back)) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
        }
    }
    producer.poll(Duration::ZERO);
}

/// Creates `topic` with `partitions` and fills it with `lines` generated
/// lines of `words` words, spread evenly over them.
pub fn load(brokers: &str, topic: &str, partitions: i32, lines: u64, words: u32) {
    create_topic(brokers, topic, partitions);
    let producer = bulk_producer(brokers);
    let mut maker = LineMaker::new(1, words);
    for i in 0..lines {
        let line = maker.next_line().to_string();
        send(
            &producer,
            BaseRecord::to(topic)
                .payload(line.as_bytes())
                .partition((i % partitions as u64) as i32),
        );
    }
    producer.flush(Duration::from_secs(120)).expect("loading");
}

/// The sum of the offsets `consumer`'s group has committed on partitions
/// `0..partitions` of `topic` (0 for none, or when the broker does not
/// answer within 5 s).
pub fn committed_total(consumer: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    consumer
        .committed_offsets(list, Duration::from_secs(5))
        .map(|l| {
            l.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .sum()
        })
        .unwrap_or(0)
}
