//! The queue's behaviour with a scripted backend: batching limits, linger, cancellation,
//! admission, failures and the cache. The real model is tested in `tests/model_serving.rs`.

use std::sync::{Condvar, Mutex};

use super::*;

/// Tokens are the text's bytes; the one "label" is the token count. A gate can hold the model
/// thread inside `score` so tests can fill the queue behind it.
#[derive(Default)]
struct Scripted {
    batches: Mutex<Vec<Vec<Vec<u32>>>>,
    gate: Mutex<bool>,
    opened: Condvar,
    entered: Mutex<usize>,
    entered_changed: Condvar,
    fail: Mutex<Option<&'static str>>,
    panic: Mutex<bool>,
    /// Time `score` takes per message.
    per_message: Mutex<Duration>,
    /// The lineup generation of each batch.
    generations: Mutex<Vec<u64>>,
}

impl Scripted {
    fn hold(&self) {
        *self.gate.lock().unwrap() = true;
    }

    fn release(&self) {
        *self.gate.lock().unwrap() = false;
        self.opened.notify_all();
    }

    /// Waits until the model thread has entered `score` `n` times.
    fn wait_entered(&self, n: usize) {
        let mut entered = self.entered.lock().unwrap();
        while *entered < n {
            entered = self.entered_changed.wait(entered).unwrap();
        }
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                b.iter()
                    .map(|t| t.iter().map(|&c| char::from(c as u8)).collect())
                    .collect()
            })
            .collect()
    }
}

impl BatchModel for Scripted {
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn score(&self, batch: &[Input<'_>], lineup: &Lineup) -> Result<Vec<Vec<f32>>, String> {
        {
            let mut entered = self.entered.lock().unwrap();
            *entered += 1;
            self.entered_changed.notify_all();
        }
        let mut held = self.gate.lock().unwrap();
        while *held {
            held = self.opened.wait(held).unwrap();
        }
        drop(held);
        std::thread::sleep(*self.per_message.lock().unwrap() * batch.len() as u32);
        self.batches
            .lock()
            .unwrap()
            .push(batch.iter().map(|t| t.tokens.to_vec()).collect());
        self.generations.lock().unwrap().push(lineup.generation);
        assert!(!*self.panic.lock().unwrap(), "scripted panic");
        if let Some(error) = *self.fail.lock().unwrap() {
            return Err(error.to_owned());
        }
        Ok(batch.iter().map(|t| vec![t.tokens.len() as f32]).collect())
    }
}

fn limits() -> Limits {
    Limits {
        max_batch_messages: 4,
        max_batch_tokens: 100,
        linger: Duration::from_millis(1),
        max_queue: 16,
        max_wait: Duration::from_secs(5),
        cache_entries: 0,
    }
}

/// A head set of one label on one-dimensional embeddings (the scripted backend answers
/// without it; the scorer needs heads to be ready).
fn head_set(version: &str) -> HeadSet {
    let dir = tempfile::tempdir().unwrap();
    crate::infra::model::heads::write_head(
        &dir.path().join("t.safetensors"),
        &[(vec![vec![1.0]], vec![0.0])],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("heads.json"),
        format!(
            r#"{{"version": "{version}", "embedding_dim": 1, "heads": [{{"name": "test",
            "file": "t.safetensors", "multi_label": true, "labels": ["len"]}}]}}"#
        ),
    )
    .unwrap();
    let heads = crate::infra::model::heads::Heads::load(dir.path(), 1).unwrap();
    HeadSet::new("test@1", heads)
}

fn scorer(backend: &Arc<Scripted>, limits: Limits) -> Scorer {
    let description = Description {
        version: "test@1".to_owned(),
        ..Description::default()
    };
    Scorer::start(
        Arc::clone(backend) as Arc<dyn BatchModel>,
        description,
        head_set("h1"),
        limits,
    )
}

fn scored(scores: &Scores) -> f32 {
    match scores {
        Scores::Scored { scores, .. } => scores[0],
        other => panic!("not scored: {other:?}"),
    }
}

/// Queues `texts` behind a held first batch ("x"), then releases the model.
async fn queue_behind_a_held_batch(
    backend: &Arc<Scripted>,
    scorer: &Scorer,
    texts: &[&str],
) -> Vec<Pending> {
    backend.hold();
    // Entries are counted from the start: a test that scored before (a warm-up) has entered
    // already, and "x" must be inside the held batch, alone, before the others queue.
    let before = *backend.entered.lock().unwrap();
    let first = scorer
        .submit("x", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    let waiter = Arc::clone(backend);
    tokio::task::spawn_blocking(move || waiter.wait_entered(before + 1))
        .await
        .unwrap();
    let mut pending = vec![first];
    for text in texts {
        pending.push(
            scorer
                .submit(text, LinkSignals::default(), Admission::FailFast)
                .await
                .unwrap(),
        );
    }
    pending
}

#[tokio::test]
async fn one_text_is_scored() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(&backend, limits());
    let scores = scorer
        .score("hello", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    assert_eq!(scored(&scores), 5.0);
    assert!(scorer.wanted());
    assert_eq!(*scorer.status().borrow(), ModelStatus::Ready);
}

#[tokio::test]
async fn batches_respect_the_message_and_token_limits() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(
        &backend,
        Limits {
            max_batch_tokens: 10,
            ..limits()
        },
    );
    // Behind the held "x": six 1-token texts (two batches of at most 4), then two 6-token texts
    // (12 tokens exceed the budget of 10: one batch each).
    let texts = ["a", "b", "c", "d", "e", "f", "gggggg", "hhhhhh"];
    let pending = queue_behind_a_held_batch(&backend, &scorer, &texts).await;
    backend.release();
    for p in pending {
        p.wait().await;
    }
    let batches = backend.batches();
    assert_eq!(batches[0], ["x"]);
    assert_eq!(batches[1], ["a", "b", "c", "d"]);
    for batch in &batches[1..] {
        assert!(batch.len() <= 4, "{batches:?}");
        assert!(
            batch.iter().map(String::len).sum::<usize>() <= 10,
            "{batches:?}"
        );
    }
    let all: Vec<&String> = batches.iter().flatten().collect();
    assert_eq!(all.len(), 9, "every job ran exactly once: {batches:?}");
}

#[tokio::test]
async fn a_text_longer_than_the_budget_runs_alone() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(
        &backend,
        Limits {
            max_batch_tokens: 16,
            ..limits()
        },
    );
    let long = "y".repeat(40);
    let scores = scorer
        .score(&long, LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    assert_eq!(scored(&scores), 40.0);
}

#[tokio::test]
async fn a_short_linger_gathers_texts_that_arrive_together() {
    let backend = Arc::new(Scripted::default());
    let scorer = Arc::new(scorer(
        &backend,
        Limits {
            linger: Duration::from_millis(200),
            ..limits()
        },
    ));
    let mut tasks = Vec::new();
    for text in ["p", "q", "r"] {
        let scorer = Arc::clone(&scorer);
        tasks.push(tokio::spawn(async move {
            scorer
                .score(text, LinkSignals::default(), Admission::FailFast)
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let batches = backend.batches();
    assert_eq!(batches.len(), 1, "lingered into one batch: {batches:?}");
    assert_eq!(batches[0].len(), 3);
}

#[tokio::test]
async fn identical_texts_in_a_batch_run_once() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(&backend, limits());
    let pending = queue_behind_a_held_batch(&backend, &scorer, &["LUL", "LUL", "LUL"]).await;
    backend.release();
    for p in pending.into_iter().skip(1) {
        assert_eq!(scored(&p.wait().await), 3.0);
    }
    assert_eq!(backend.batches()[1], ["LUL"]);
}

#[tokio::test]
async fn jobs_whose_caller_has_gone_are_skipped() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(&backend, limits());
    let mut pending = queue_behind_a_held_batch(&backend, &scorer, &["gone", "kept"]).await;
    let kept = pending.pop().unwrap();
    drop(pending.pop()); // the caller of "gone" went away
    backend.release();
    assert_eq!(scored(&kept.wait().await), 4.0);
    let ran: Vec<String> = backend.batches().into_iter().flatten().collect();
    assert!(!ran.contains(&"gone".to_owned()), "{ran:?}");
    assert!(ran.contains(&"kept".to_owned()));
}

#[tokio::test]
async fn a_queue_the_model_cannot_drain_within_max_wait_fails_fast() {
    let backend = Arc::new(Scripted::default());
    *backend.per_message.lock().unwrap() = Duration::from_millis(50);
    let scorer = scorer(
        &backend,
        Limits {
            max_wait: Duration::from_millis(200),
            ..limits()
        },
    );
    // The model's pace: 50 ms a message; four queued take 200 ms, max_wait. The queue
    // (16 slots) has room, yet a caller that can retry is refused; a stream still queues.
    scorer
        .score("warm", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    // (The model thread lets go of a job's slot just after answering it.)
    while scorer.queued() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _pending = queue_behind_a_held_batch(&backend, &scorer, &["a", "b", "c"]).await;
    assert_eq!(scorer.queued(), 4);
    let overloaded = scorer
        .submit("d", LinkSignals::default(), Admission::FailFast)
        .await
        .expect_err("the model is 200 ms behind");
    assert_eq!(overloaded.queued, 4);
    assert!(overloaded.retry_after >= Duration::from_millis(200));
    assert!(
        scorer
            .submit("e", LinkSignals::default(), Admission::Wait)
            .await
            .is_ok()
    );
    backend.release();
}

#[tokio::test]
async fn jobs_that_cannot_be_answered_in_time_are_not_run() {
    let backend = Arc::new(Scripted::default());
    *backend.per_message.lock().unwrap() = Duration::from_millis(200);
    let scorer = scorer(
        &backend,
        Limits {
            max_wait: Duration::from_secs(1),
            ..limits()
        },
    );
    // "late" queues behind a batch that takes 0.8 s (held 0.6 s, then 200 ms of model
    // time): when the model is free again "late" has 200 ms left, less than the last batch
    // took, so it is answered at once and not run. "soon", queued 0.6 s later behind it, is
    // the last job waiting and has time: it runs.
    let mut pending = queue_behind_a_held_batch(&backend, &scorer, &["late"]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    pending.push(
        scorer
            .submit("soon", LinkSignals::default(), Admission::FailFast)
            .await
            .unwrap(),
    );
    backend.release();
    let mut answers = Vec::new();
    for p in pending {
        answers.push(p.wait().await);
    }
    assert!(
        matches!(&answers[1], Scores::Unavailable(Unavailable::TimedOut)),
        "{:?}",
        answers[1]
    );
    assert_eq!(scored(&answers[2]), 4.0);
    let ran: Vec<String> = backend.batches().into_iter().flatten().collect();
    assert!(
        !ran.contains(&"late".to_owned()),
        "ran a job that could not finish before its deadline: {ran:?}"
    );
    // After such a slow batch a lone job still runs (and corrects the estimate).
    assert_eq!(
        scored(
            &scorer
                .score("again", LinkSignals::default(), Admission::FailFast)
                .await
                .unwrap()
        ),
        5.0
    );
}

#[tokio::test]
async fn a_full_queue_fails_fast_with_a_retry_hint_or_makes_streams_wait() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(
        &backend,
        Limits {
            max_queue: 3,
            max_wait: Duration::from_millis(100),
            ..limits()
        },
    );
    // "x" is held in the model; two more fill the queue.
    let pending = queue_behind_a_held_batch(&backend, &scorer, &["a", "b"]).await;
    assert_eq!(scorer.queued(), 3);
    let overloaded = scorer
        .submit("c", LinkSignals::default(), Admission::FailFast)
        .await
        .expect_err("no room");
    assert_eq!(overloaded.queued, 3);
    assert!(overloaded.retry_after >= Duration::from_millis(10));
    assert!(overloaded.to_string().contains("retry after"));

    // A stream waits for room, then goes without scores at max_wait.
    let started = Instant::now();
    let waited = scorer
        .score("d", LinkSignals::default(), Admission::Wait)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(
        matches!(&waited, Scores::Unavailable(Unavailable::QueueFull { .. })),
        "{waited:?}"
    );

    // (The queued callers have given up by now: their max_wait has passed too.) Room again
    // once the model moves on: a waiting caller gets its slot and its scores.
    drop(pending);
    backend.release();
    let again = scorer
        .score("e", LinkSignals::default(), Admission::Wait)
        .await
        .unwrap();
    assert_eq!(scored(&again), 1.0);
}

#[tokio::test]
async fn failures_answer_unavailable_and_mark_the_model_failed_until_it_recovers() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(&backend, limits());
    *backend.fail.lock().unwrap() = Some("out of memory");
    for i in 0..3 {
        let scores = scorer
            .score(
                &format!("t{i}"),
                LinkSignals::default(),
                Admission::FailFast,
            )
            .await
            .unwrap();
        assert!(
            matches!(&scores, Scores::Unavailable(Unavailable::Batch(why)) if why.contains("out of memory")),
            "{scores:?}"
        );
    }
    let mut status = scorer.status();
    status
        .wait_for(|s| {
            matches!(
                s,
                ModelStatus::Failed(ModelFailure::Failing { failures: 3, .. })
            )
        })
        .await
        .unwrap();
    assert!(
        scorer.wanted(),
        "a failed model still wants messages, to mark them degraded"
    );

    *backend.fail.lock().unwrap() = None;
    let scores = scorer
        .score("ok", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    assert_eq!(scored(&scores), 2.0);
    status.wait_for(|s| *s == ModelStatus::Ready).await.unwrap();
}

#[tokio::test]
async fn a_panicking_model_answers_unavailable_and_keeps_running() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(&backend, limits());
    *backend.panic.lock().unwrap() = true;
    let scores = scorer
        .score("boom", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    assert!(
        matches!(&scores, Scores::Unavailable(Unavailable::Batch(why)) if why.contains("panicked")),
        "{scores:?}"
    );
    *backend.panic.lock().unwrap() = false;
    let scores = scorer
        .score("fine", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    assert_eq!(scored(&scores), 4.0);
}

#[tokio::test]
async fn repeats_come_from_the_cache() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(
        &backend,
        Limits {
            cache_entries: 8,
            ..limits()
        },
    );
    let first = scorer
        .score("OMEGALUL", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    let again = scorer
        .submit("OMEGALUL", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    assert!(
        matches!(&again, Pending::Done(Scores::Scored { .. })),
        "a repeat never queues: {again:?}"
    );
    assert_eq!(scored(&first), scored(&again.wait().await));
    assert_eq!(backend.batches().len(), 1);
    let cache = scorer.running.as_ref().unwrap().cache.as_ref().unwrap();
    assert!((cache.hit_ratio() - 0.5).abs() < 1e-9);
    assert_eq!(scorer.cache_hit_ratio(), cache.hit_ratio());
}

#[tokio::test]
async fn a_swapped_lineup_scores_what_comes_after_it_and_never_serves_older_scores() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(
        &backend,
        Limits {
            cache_entries: 8,
            ..limits()
        },
    );
    scorer
        .score("LUL", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    // "before" is queued behind a held batch with the first lineup, "after" with the second:
    // each is scored by its own, in batches of their own.
    let mut pending = queue_behind_a_held_batch(&backend, &scorer, &["before"]).await;
    assert!(scorer.set_lineup(Arc::new(head_set("h2")), None));
    pending.push(
        scorer
            .submit("after", LinkSignals::default(), Admission::FailFast)
            .await
            .unwrap(),
    );
    backend.release();
    let mut generations = Vec::new();
    for p in pending {
        match p.wait().await {
            Scores::Scored { lineup, .. } => generations.push(lineup.generation),
            other => panic!("not scored: {other:?}"),
        }
    }
    assert_eq!(generations, [0, 0, 1]);
    assert_eq!(
        backend.batches(),
        [vec!["LUL"], vec!["x"], vec!["before"], vec!["after"]]
    );
    assert_eq!(*backend.generations.lock().unwrap(), [0, 0, 0, 1]);
    // A repeat of a text the first lineup scored is scored again, by the second.
    let again = scorer
        .score("LUL", LinkSignals::default(), Admission::FailFast)
        .await
        .unwrap();
    assert!(matches!(&again, Scores::Scored { lineup, .. } if lineup.generation == 1));
    assert_eq!(backend.batches().len(), 5);
    assert_eq!(scorer.lineup().active.heads.version, "h2");
}

#[tokio::test]
async fn a_lineup_without_heads_stops_scoring_and_one_with_heads_starts_it() {
    let backend = Arc::new(Scripted::default());
    let scorer = scorer(&backend, limits());
    assert!(scorer.wanted());
    scorer.set_lineup(Arc::new(HeadSet::new("test@1", Default::default())), None);
    assert_eq!(*scorer.status().borrow(), ModelStatus::NoHeads);
    assert!(!scorer.wanted());
    scorer.set_lineup(Arc::new(head_set("h3")), None);
    assert_eq!(*scorer.status().borrow(), ModelStatus::Ready);
    let idle = Scorer::idle(ModelStatus::Off, Description::default());
    assert!(!idle.set_lineup(Arc::new(head_set("h4")), None));
    assert_eq!(*idle.status().borrow(), ModelStatus::Off);
}

#[tokio::test]
async fn an_idle_scorer_says_why() {
    let off = Scorer::idle(ModelStatus::Off, Description::default());
    assert!(!off.wanted());
    assert_eq!(off.cache_hit_ratio(), 0.0);
    assert!(matches!(
        off.score("x", LinkSignals::default(), Admission::FailFast)
            .await
            .unwrap(),
        Scores::NotScored
    ));
    let failed = Scorer::idle(
        ModelStatus::Failed(ModelFailure::Weights("weights unreadable".to_owned())),
        Description::default(),
    );
    assert!(failed.wanted());
    assert!(matches!(
        failed.score("x", LinkSignals::default(), Admission::FailFast).await.unwrap(),
        Scores::Unavailable(Unavailable::Failed(ModelFailure::Weights(why))) if why == "weights unreadable"
    ));
    assert!(ModelStatus::NoHeads.detail().contains("modbot train"));
}

#[test]
fn length_buckets_bound_the_padding_and_keep_every_index() {
    let lengths = [3usize, 200, 4, 5, 60, 3, 64, 250, 4];
    let seqs: Vec<Vec<u32>> = lengths.iter().map(|&n| vec![1; n]).collect();
    let batch: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let buckets = super::length_buckets(&batch);
    let mut seen: Vec<usize> = buckets.iter().flatten().copied().collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
    for bucket in &buckets {
        let real: usize = bucket.iter().map(|&i| lengths[i]).sum();
        let longest = bucket.iter().map(|&i| lengths[i]).max().unwrap();
        assert!(
            (bucket.len() * longest) as f64 <= 1.25 * real as f64,
            "{bucket:?} of {lengths:?}"
        );
    }
    assert!(
        buckets.len() < lengths.len(),
        "short ones share: {buckets:?}"
    );
}
