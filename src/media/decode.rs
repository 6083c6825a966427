//! Reading video frames and audio from files with FFmpeg.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use ff::format::{sample, Pixel, Sample};
use ff::media::Type;
use ffmpeg_next as ff;
use tch::{Kind, Tensor};

use super::Audio;

/// What a media file holds: frames `[N, H, W, 3]` with their rate, and audio.
pub struct Decoded {
    pub frames: Option<(Tensor, f64)>,
    pub audio: Option<Audio>,
    /// The video stream's depth (its pixel format's widest component; 8 without video).
    pub bit_depth: u32,
    /// `sRGB`, `HDR` or `HDR PQ` by the video stream's transfer; none when unrecognised.
    pub color_space: Option<String>,
}

/// Upstream's `video_stream_bit_depth`: the pixel format's widest component.
fn bit_depth(format: ff::format::Pixel) -> u32 {
    // SAFETY: FFmpeg's static descriptor table; null for an unknown format.
    let descriptor = unsafe { ff::ffi::av_pix_fmt_desc_get(format.into()) };
    if descriptor.is_null() {
        return 8;
    }
    let descriptor = unsafe { &*descriptor };
    let components = &descriptor.comp[..descriptor.nb_components as usize];
    components.iter().map(|c| c.depth as u32).max().unwrap_or(8)
}

/// Upstream's `VIDEO_TRANSFER_COLOR_SPACES`.
fn color_space(transfer: ff::color::TransferCharacteristic) -> Option<String> {
    use ff::color::TransferCharacteristic as T;
    match transfer {
        T::BT709 | T::IEC61966_2_1 => Some("sRGB".into()),
        T::ARIB_STD_B67 => Some("HDR".into()),
        T::SMPTE2084 => Some("HDR PQ".into()),
        _ => None,
    }
}

struct VideoTrack {
    index: usize,
    decoder: ff::decoder::Video,
    scaler: Option<ff::software::scaling::Context>,
    fps: f64,
    bytes: Vec<u8>,
    count: i64,
    size: (u32, u32),
}

/// The converter of decoded frames to RGB, reading YUV with the matrix and range the stream
/// is tagged with (as PyAV's conversion does), swscale's default matrix when untagged.
fn to_rgb(frame: &ff::frame::Video) -> Result<ff::software::scaling::Context> {
    let (w, h) = (frame.width(), frame.height());
    let mut scaler = ff::software::scaling::Context::get(
        frame.format(),
        w,
        h,
        Pixel::RGB24,
        w,
        h,
        ff::software::scaling::Flags::BILINEAR,
    )?;
    use ff::color::Space;
    let matrix = match frame.color_space() {
        Space::BT709 => ff::ffi::SWS_CS_ITU709,
        Space::BT2020NCL | Space::BT2020CL => ff::ffi::SWS_CS_BT2020,
        Space::FCC => ff::ffi::SWS_CS_FCC,
        Space::SMPTE240M => ff::ffi::SWS_CS_SMPTE240M,
        _ => ff::ffi::SWS_CS_DEFAULT,
    };
    let full_range = frame.color_range() == ff::color::Range::JPEG;
    // SAFETY: a live context and FFmpeg's own coefficient tables.
    unsafe {
        ff::ffi::sws_setColorspaceDetails(
            scaler.as_mut_ptr(),
            ff::ffi::sws_getCoefficients(matrix),
            full_range as i32,
            ff::ffi::sws_getCoefficients(ff::ffi::SWS_CS_DEFAULT),
            1,
            0,
            1 << 16,
            1 << 16,
        );
    }
    Ok(scaler)
}

impl VideoTrack {
    fn take_frames(&mut self) -> Result<()> {
        let mut frame = ff::frame::Video::empty();
        while self.decoder.receive_frame(&mut frame).is_ok() {
            let (w, h) = (frame.width(), frame.height());
            if self.count == 0 {
                self.size = (w, h);
            }
            if (w, h) != self.size {
                continue;
            }
            let scaler = match &mut self.scaler {
                Some(s) => s,
                None => self.scaler.insert(to_rgb(&frame)?),
            };
            let mut rgb = ff::frame::Video::empty();
            scaler.run(&frame, &mut rgb)?;
            let stride = rgb.stride(0);
            let row = w as usize * 3;
            for y in 0..h as usize {
                self.bytes
                    .extend_from_slice(&rgb.data(0)[y * stride..y * stride + row]);
            }
            self.count += 1;
        }
        Ok(())
    }
}

struct AudioTrack {
    index: usize,
    decoder: ff::decoder::Audio,
    resampler: Option<ff::software::resampling::Context>,
    channels: Vec<Vec<f32>>,
    rate: u32,
}

impl AudioTrack {
    fn take_samples(&mut self) -> Result<()> {
        let mut frame = ff::frame::Audio::empty();
        let planar = Sample::F32(sample::Type::Planar);
        while self.decoder.receive_frame(&mut frame).is_ok() {
            let n_channels = frame.channels() as usize;
            let mut layout = frame.channel_layout();
            if layout.is_empty() {
                layout = ff::ChannelLayout::default(n_channels as i32);
                frame.set_channel_layout(layout);
            }
            self.rate = frame.rate();
            let converted;
            let data = if frame.format() == planar {
                &frame
            } else {
                let conv = match &mut self.resampler {
                    Some(r) => r,
                    None => self
                        .resampler
                        .insert(ff::software::resampling::Context::get(
                            frame.format(),
                            layout,
                            frame.rate(),
                            planar,
                            layout,
                            frame.rate(),
                        )?),
                };
                let mut out = ff::frame::Audio::new(planar, frame.samples(), layout);
                conv.run(&frame, &mut out)?;
                converted = out;
                &converted
            };
            if self.channels.len() < n_channels {
                self.channels.resize(n_channels, Vec::new());
            }
            for (c, ch) in self.channels.iter_mut().enumerate().take(n_channels) {
                ch.extend_from_slice(&data.plane::<f32>(c)[..data.samples()]);
            }
        }
        Ok(())
    }
}

/// Decodes a file's best video stream (when `video`) and best audio stream.
pub fn read(path: &Path, video: bool) -> Result<Decoded> {
    ff::init()?;
    let mut input =
        ff::format::input(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut format = (8, None);
    let mut vtrack = match input.streams().best(Type::Video).filter(|_| video) {
        Some(stream) => {
            let decoder = ff::codec::context::Context::from_parameters(stream.parameters())?
                .decoder()
                .video()?;
            format = (
                bit_depth(decoder.format()),
                color_space(decoder.color_transfer_characteristic()),
            );
            let rate = stream.avg_frame_rate();
            let rate = if rate.denominator() != 0 && rate.numerator() != 0 {
                rate
            } else {
                stream.rate()
            };
            let fps = rate.numerator() as f64 / rate.denominator().max(1) as f64;
            Some(VideoTrack {
                index: stream.index(),
                decoder,
                scaler: None,
                fps,
                bytes: Vec::new(),
                count: 0,
                size: (0, 0),
            })
        }
        None => None,
    };
    let mut atrack = match input.streams().best(Type::Audio) {
        Some(stream) => {
            let decoder = ff::codec::context::Context::from_parameters(stream.parameters())?
                .decoder()
                .audio()?;
            Some(AudioTrack {
                index: stream.index(),
                decoder,
                resampler: None,
                channels: Vec::new(),
                rate: 0,
            })
        }
        None => None,
    };
    if vtrack.is_none() && atrack.is_none() {
        return Err(anyhow!(
            "{} has no {} stream",
            path.display(),
            if video { "video or audio" } else { "audio" }
        ));
    }
    for (stream, packet) in input.packets() {
        if let Some(v) = vtrack.as_mut().filter(|v| v.index == stream.index()) {
            v.decoder
                .send_packet(&packet)
                .with_context(|| format!("decoding {}", path.display()))?;
            v.take_frames()?;
        } else if let Some(a) = atrack.as_mut().filter(|a| a.index == stream.index()) {
            a.decoder
                .send_packet(&packet)
                .with_context(|| format!("decoding {}", path.display()))?;
            a.take_samples()?;
        }
    }
    if let Some(v) = vtrack.as_mut() {
        v.decoder.send_eof()?;
        v.take_frames()?;
    }
    if let Some(a) = atrack.as_mut() {
        a.decoder.send_eof()?;
        a.take_samples()?;
    }
    let frames = match vtrack {
        Some(v) if v.count > 0 => {
            let (w, h) = v.size;
            let t = Tensor::from_slice(&v.bytes)
                .view([v.count, h as i64, w as i64, 3])
                .to_kind(Kind::Float)
                / 255.0;
            Some((t, v.fps))
        }
        Some(_) => {
            return Err(anyhow!(
                "{} has a video stream without decodable frames",
                path.display()
            ))
        }
        None => None,
    };
    let audio = atrack.filter(|a| !a.channels.is_empty()).map(|a| {
        let len = a.channels.iter().map(Vec::len).min().unwrap_or(0);
        let flat: Vec<f32> = a
            .channels
            .iter()
            .flat_map(|c| c[..len].iter().copied())
            .collect();
        Audio::new(
            Tensor::from_slice(&flat).view([1, a.channels.len() as i64, len as i64]),
            a.rate,
        )
    });
    Ok(Decoded {
        frames,
        audio,
        bit_depth: format.0,
        color_space: format.1,
    })
}
