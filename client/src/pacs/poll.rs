//! One pass over the PACS: find the series the site's query names, and diagnose each one the
//! record does not already settle — fetch, diagnose under encryption, report, store, record.
//! What may pass (a PACS or server restarting) leaves the series for the next pass; what no pass
//! mends (a broken or oversized series) is recorded as refused; what needs a person (credentials,
//! a refused inference mode, the record) stops the pass with its error.

use std::path::{Path, PathBuf};
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, warn};

use super::error::PacsError;
use super::query::SeriesRef;
use super::record::{Record, State};
use super::report::{self, Finding, ReportSpec, SourceHeader};
use super::{Diagnose, Pacs};
use crate::infer::{InferOutcome, InferenceError};

/// What one pass did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    /// Series the query found.
    pub found: usize,
    /// Already diagnosed or refused before this pass.
    pub settled: usize,
    /// Diagnosed in this pass: series UID and the summary stored in its report.
    pub diagnosed: Vec<(String, String)>,
    /// Refused in this pass: series UID and why.
    pub refused: Vec<(String, String)>,
    /// Left for the next pass: series UID and why.
    pub deferred: Vec<(String, String)>,
    /// Seconds per step of each series diagnosed in this pass.
    pub times: Vec<SeriesTimes>,
}

/// Where a diagnosed series' time went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SeriesTimes {
    pub series: String,
    pub instances: usize,
    pub images: usize,
    /// WADO-RS: request to the last byte.
    pub fetch_s: f64,
    /// Encryption, evaluation (here or at the server) and decryption of every image.
    pub diagnose_s: f64,
    /// The report made and stored by STOW-RS, the record written.
    pub report_s: f64,
}

/// How one series ended in a pass.
enum Outcome {
    Diagnosed(String, Option<SeriesTimes>),
    Refused(String),
    Deferred(String),
}

/// The PACS, the diagnosis and the record, with a work folder for the fetched instances.
pub struct Poller<P, D> {
    pub pacs: P,
    pub diagnose: D,
    pub record: Record,
    /// Fetched instances are written here while they are diagnosed, and removed after.
    pub work: PathBuf,
    pub max_instances: u32,
}

impl<P: Pacs, D: Diagnose> Poller<P, D> {
    /// One pass; `Err` only for what needs a person.
    pub fn pass(&mut self) -> Result<PassReport, PacsError> {
        let found = self.pacs.find_series()?;
        let mut report = PassReport {
            found: found.len(),
            ..Default::default()
        };
        for s in &found {
            match self.series(s) {
                Ok(None) => report.settled += 1,
                Ok(Some(Outcome::Diagnosed(summary, times))) => {
                    info!(series = %s.series, "diagnosed: {summary}");
                    report.diagnosed.push((s.series.clone(), summary));
                    report.times.extend(times);
                }
                Ok(Some(Outcome::Refused(why))) => {
                    warn!(series = %s.series, "refused: {why}");
                    self.record.set(
                        &s.series,
                        &s.study,
                        State::Refused {
                            reason: why.clone(),
                        },
                    )?;
                    report.refused.push((s.series.clone(), why));
                }
                Ok(Some(Outcome::Deferred(why))) => {
                    warn!(series = %s.series, "left for the next poll: {why}");
                    report.deferred.push((s.series.clone(), why));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// `None`: settled before. `Err`: stop.
    fn series(&mut self, s: &SeriesRef) -> Result<Option<Outcome>, PacsError> {
        match self.record.get(&s.series)?.map(|e| e.state) {
            Some(State::Diagnosed { .. } | State::Refused { .. }) => return Ok(None),
            Some(State::Storing {
                report,
                summary,
                images,
            }) => {
                // stopped while storing: the PACS says whether the report arrived
                match self.pacs.has_instance(&s.study, &report) {
                    Ok(true) => {
                        let state = State::Diagnosed {
                            report,
                            summary: summary.clone(),
                            images,
                        };
                        self.record.set(&s.series, &s.study, state)?;
                        return Ok(Some(Outcome::Diagnosed(summary, None)));
                    }
                    Ok(false) => {}
                    Err(e) => return sort(e),
                }
            }
            None => {}
        }
        if let Some(n) = s.instances
            && n > self.max_instances
        {
            return Ok(Some(Outcome::Refused(format!(
                "{n} instances, more than [pacs] max_instances = {}",
                self.max_instances
            ))));
        }
        let t = Instant::now();
        let instances = match self.pacs.retrieve(s) {
            Ok(i) => i,
            Err(e) => return sort(e),
        };
        let mut times = SeriesTimes {
            series: s.series.clone(),
            instances: instances.len(),
            fetch_s: t.elapsed().as_secs_f64(),
            ..Default::default()
        };
        if instances.is_empty() {
            return Ok(Some(Outcome::Refused(
                "the series holds no instance".into(),
            )));
        }
        let mut headers = Vec::with_capacity(instances.len());
        for (k, bytes) in instances.iter().enumerate() {
            match report::read_header(bytes) {
                Ok(h) => headers.push(h),
                Err(why) => {
                    return Ok(Some(Outcome::Refused(format!(
                        "instance {} of {}: {why}",
                        k + 1,
                        instances.len()
                    ))));
                }
            }
        }
        let files = instance_names(&self.work, instances.len());
        let t = Instant::now();
        let outcome = match self.diagnose_files(&instances) {
            Ok(o) => o,
            Err(e @ (InferenceError::Dataset(_) | InferenceError::Image { .. })) => {
                // named by instance, not by the node's work file
                return Ok(Some(Outcome::Refused(name_instances(
                    &e.to_string(),
                    &files,
                    &headers,
                ))));
            }
            Err(e) => return sort(PacsError::Inference(e)),
        };
        times.diagnose_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let findings = findings(&outcome, &files);
        if findings.is_empty() {
            return Ok(Some(Outcome::Refused("no image was diagnosed".into())));
        }
        let summary = report::summary(&findings);
        let report_uid = report::new_uid()?;
        let sr = sr(&headers, &findings, &outcome, &report_uid)?;
        let images = findings.len() as u32;
        self.record.set(
            &s.series,
            &s.study,
            State::Storing {
                report: report_uid.clone(),
                summary: summary.clone(),
                images,
            },
        )?;
        if let Err(e) = self.pacs.store(&sr) {
            return match sort(e)? {
                Some(Outcome::Refused(why)) => Ok(Some(Outcome::Refused(format!(
                    "the PACS did not store the report: {why}"
                )))),
                other => Ok(other),
            };
        }
        self.record.set(
            &s.series,
            &s.study,
            State::Diagnosed {
                report: report_uid,
                summary: summary.clone(),
                images,
            },
        )?;
        times.images = images as usize;
        times.report_s = t.elapsed().as_secs_f64();
        Ok(Some(Outcome::Diagnosed(summary, Some(times))))
    }

    /// Writes the instances to the work folder, diagnoses them, removes them.
    fn diagnose_files(&mut self, instances: &[Vec<u8>]) -> Result<InferOutcome, InferenceError> {
        let files = instance_names(&self.work, instances.len());
        let written = (|| {
            std::fs::create_dir_all(&self.work)?;
            for (path, bytes) in files.iter().zip(instances) {
                std::fs::write(path, bytes)?;
            }
            Ok::<_, std::io::Error>(())
        })();
        let result = match written {
            Ok(()) => self.diagnose.diagnose(&files),
            Err(e) => Err(InferenceError::Usage(format!(
                "cannot write the fetched instances to {}: {e}",
                self.work.display()
            ))),
        };
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        result
    }
}

/// What to do about a failure: stop (`Err`), refuse the series, or leave it for the next pass.
fn sort(e: PacsError) -> Result<Option<Outcome>, PacsError> {
    if e.is_fatal() {
        return Err(e);
    }
    if e.is_passing() {
        return Ok(Some(Outcome::Deferred(e.to_string())));
    }
    match &e {
        // the series itself cannot be diagnosed as it is: no later pass mends it
        PacsError::TooLarge { .. }
        | PacsError::BadAnswer { .. }
        | PacsError::Http { .. }
        | PacsError::Series { .. }
        | PacsError::Report(_) => Ok(Some(Outcome::Refused(e.to_string()))),
        _ => Ok(Some(Outcome::Deferred(e.to_string()))),
    }
}

/// `message` with each work file's path replaced by the instance it holds.
fn name_instances(message: &str, files: &[PathBuf], headers: &[SourceHeader]) -> String {
    let mut m = message.to_string();
    for (k, (f, h)) in files.iter().zip(headers).enumerate() {
        let named = format!("instance {} of {} ({})", k + 1, files.len(), h.sop_instance);
        m = m.replace(&f.display().to_string(), &named);
    }
    m
}

fn instance_names(work: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|k| work.join(format!("instance-{k:05}.dcm")))
        .collect()
}

/// Each image's result with the instance (and frame) it came from.
fn findings(outcome: &InferOutcome, files: &[PathBuf]) -> Vec<Finding> {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    outcome
        .images
        .iter()
        .filter_map(|im| {
            let (instance, rest) = names
                .iter()
                .enumerate()
                .find_map(|(k, n)| im.image.strip_prefix(n.as_str()).map(|r| (k, r)))?;
            let frame = rest
                .trim()
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string);
            Some(Finding {
                instance,
                frame,
                class: im.class.clone(),
                probability: im.probabilities.get(im.label).copied().unwrap_or(f64::NAN),
            })
        })
        .collect()
}

fn sr(
    headers: &[SourceHeader],
    findings: &[Finding],
    outcome: &InferOutcome,
    report_uid: &str,
) -> Result<Vec<u8>, PacsError> {
    let now = chrono::Utc::now();
    let series_uid = report::new_uid()?;
    report::sr_bytes(&ReportSpec {
        sources: headers,
        findings,
        model: &outcome.model,
        inference: &outcome.inference.to_string(),
        fingerprint: &outcome.fingerprint,
        series_uid: &series_uid,
        instance_uid: report_uid,
        date: &now.format("%Y%m%d").to_string(),
        time: &now.format("%H%M%S").to_string(),
    })
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
