"""Power and thermal state on the device: tegrastats (Jetson), vcgencmd and the PMIC (Raspberry Pi), hwmon
power meters (INA219/INA260), and the energy arithmetic shared by all of them (:mod:`device.power.energy`)."""
